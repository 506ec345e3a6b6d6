//! Human output: tables, ages, log lines.

use wharf_types::api::LogRecord;

/// Prints rows as left-aligned columns under a header.
pub fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        println!("{}", s.trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// "3s", "5m", "2h", "4d" since `then_ms`.
pub fn age(then_ms: u64) -> String {
    span(now_ms().saturating_sub(then_ms) / 1000)
}

/// How long until `at_ms` ("0s" when past), in the units of [`age`].
pub fn until(at_ms: u64) -> String {
    span(at_ms.saturating_sub(now_ms()) / 1000)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Seconds as "42s", "5m", "3h" or "12d".
fn span(s: u64) -> String {
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86399 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

/// A log record as one human line; structured fields follow the message.
pub fn log_line(r: &LogRecord) -> String {
    let mut line = format!("{} {}[{}]: {}", r.ts, r.replica, r.stream, r.msg);
    if let Some(fields) = &r.fields {
        for (k, v) in fields {
            if k == "msg" || k == "message" {
                continue;
            }
            let v = v.as_str().map_or_else(|| v.to_string(), str::to_string);
            line.push_str(&format!(" {k}={v}"));
        }
    }
    line
}

/// Prints a value as pretty JSON.
pub fn json<T: serde::Serialize>(v: &T) {
    match serde_json::to_string_pretty(v) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("error: cannot encode JSON: {e}"),
    }
}
