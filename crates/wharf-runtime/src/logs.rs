//! App logs: one JSON-lines file per app under the data dir, appended by every replica's
//! init (each record is one `write` on an `O_APPEND` file, so concurrent writers never
//! interleave within a line), read back and followed by `wharf logs`.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;
use wharf_types::api::LogRecord;

/// Longest line kept; longer output is split.
pub const MAX_LINE: usize = 64 * 1024;

/// RFC 3339 UTC with milliseconds: sorts lexicographically in time order.
pub fn timestamp(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// Who wrote a line.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Source {
    pub app: String,
    pub process: String,
    pub replica: String,
    pub release: u32,
}

/// Builds the record for one output line; a line that is a JSON object keeps its fields.
pub fn record(src: &Source, stream: &str, line: &str) -> LogRecord {
    let line = line.strip_suffix('\n').unwrap_or(line);
    let line = line.strip_suffix('\r').unwrap_or(line);
    let fields = match serde_json::from_str::<serde_json::Value>(line) {
        Ok(serde_json::Value::Object(map)) => Some(map),
        _ => None,
    };
    let msg = fields
        .as_ref()
        .and_then(|f| f.get("msg").or_else(|| f.get("message")))
        .and_then(|v| v.as_str())
        .map_or_else(|| line.to_string(), str::to_string);
    LogRecord {
        ts: timestamp(SystemTime::now()),
        app: src.app.clone(),
        process: src.process.clone(),
        replica: src.replica.clone(),
        release: src.release,
        stream: stream.to_string(),
        msg,
        fields,
    }
}

/// Opens a log file for appending, creating it (and its directory).
pub fn open_append(path: &Path) -> std::io::Result<File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    OpenOptions::new().create(true).append(true).open(path)
}

/// Appends one record as one line with a single write.
pub fn append(file: &mut File, rec: &LogRecord) -> std::io::Result<()> {
    let mut buf = serde_json::to_vec(rec).map_err(std::io::Error::other)?;
    buf.push(b'\n');
    file.write_all(&buf)
}

/// Which records to return.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only records at or after this RFC 3339 timestamp.
    pub since: Option<String>,
    pub process: Option<String>,
    pub replica: Option<String>,
}

impl Filter {
    pub fn matches(&self, r: &LogRecord) -> bool {
        self.since
            .as_ref()
            .is_none_or(|s| r.ts.as_str() >= s.as_str())
            && self.process.as_ref().is_none_or(|p| &r.process == p)
            && self.replica.as_ref().is_none_or(|p| &r.replica == p)
    }
}

fn parse_line(line: &str) -> Option<LogRecord> {
    serde_json::from_str(line.trim_end()).ok()
}

/// Reads matching records; with `last`, only the last N of them.
pub fn read(
    path: &Path,
    filter: &Filter,
    last: Option<usize>,
) -> std::io::Result<(Vec<LogRecord>, u64)> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(e),
    };
    let mut reader = BufReader::new(file);
    let mut out = std::collections::VecDeque::new();
    let mut offset = 0u64;
    let mut line = String::new();
    loop {
        line.clear();
        let n = reader.read_line(&mut line)?;
        if n == 0 || !line.ends_with('\n') {
            break;
        }
        offset += n as u64;
        if let Some(rec) = parse_line(&line).filter(|r| filter.matches(r)) {
            out.push_back(rec);
            if last.is_some_and(|l| out.len() > l) {
                out.pop_front();
            }
        }
    }
    Ok((out.into(), offset))
}

/// Follows a log file from an offset: returns complete new lines as they appear.
#[derive(Debug)]
pub struct Follower {
    path: PathBuf,
    offset: u64,
    partial: Vec<u8>,
}

impl Follower {
    pub fn new(path: PathBuf, offset: u64) -> Self {
        Self {
            path,
            offset,
            partial: Vec::new(),
        }
    }

    /// New records since the last call (none if the file does not exist yet).
    pub fn poll(&mut self, filter: &Filter) -> std::io::Result<Vec<LogRecord>> {
        let mut file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let len = file.metadata()?.len();
        if len < self.offset {
            // Truncated or replaced: start over.
            self.offset = 0;
            self.partial.clear();
        }
        file.seek(SeekFrom::Start(self.offset))?;
        let mut buf = Vec::new();
        file.take(len - self.offset).read_to_end(&mut buf)?;
        self.offset += buf.len() as u64;
        self.partial.extend_from_slice(&buf);
        let mut out = Vec::new();
        while let Some(pos) = self.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=pos).collect();
            if let Some(rec) =
                parse_line(&String::from_utf8_lossy(&line)).filter(|r| filter.matches(r))
            {
                out.push(rec);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src() -> Source {
        Source {
            app: "a".into(),
            process: "web".into(),
            replica: "web-1-v1".into(),
            release: 1,
        }
    }

    #[test]
    fn json_lines_keep_their_fields() {
        let r = record(
            &src(),
            "stdout",
            "{\"level\":\"info\",\"msg\":\"started\",\"port\":8080}\n",
        );
        assert_eq!(r.msg, "started");
        assert_eq!(r.fields.as_ref().unwrap()["port"], 8080);
        let r = record(&src(), "stderr", "plain text\r\n");
        assert_eq!(r.msg, "plain text");
        assert!(r.fields.is_none());
        let r = record(&src(), "stdout", "[1,2]");
        assert!(r.fields.is_none(), "only objects are structured");
    }

    #[test]
    fn append_read_filter_and_follow() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs/a/app.log");
        let mut f = open_append(&path).unwrap();
        let mut old = record(&src(), "stdout", "old");
        old.ts = "2000-01-01T00:00:00.000Z".into();
        append(&mut f, &old).unwrap();
        append(&mut f, &record(&src(), "stdout", "one")).unwrap();
        let mut w = record(&src(), "stdout", "worker line");
        w.process = "worker".into();
        append(&mut f, &w).unwrap();

        let (all, offset) = read(&path, &Filter::default(), None).unwrap();
        assert_eq!(all.len(), 3);
        let since = Filter {
            since: Some("2020-01-01T00:00:00.000Z".into()),
            ..Filter::default()
        };
        assert_eq!(read(&path, &since, None).unwrap().0.len(), 2);
        let web = Filter {
            process: Some("web".into()),
            ..Filter::default()
        };
        let (last, _) = read(&path, &web, Some(1)).unwrap();
        assert_eq!(
            last.iter().map(|r| r.msg.as_str()).collect::<Vec<_>>(),
            ["one"]
        );

        let mut follow = Follower::new(path.clone(), offset);
        assert!(follow.poll(&Filter::default()).unwrap().is_empty());
        append(&mut f, &record(&src(), "stderr", "two")).unwrap();
        f.write_all(b"{\"partial").unwrap();
        let got = follow.poll(&Filter::default()).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].msg, "two");
        assert!(
            follow.poll(&Filter::default()).unwrap().is_empty(),
            "a partial line waits for its end"
        );
    }

    #[test]
    fn missing_file_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let (v, off) = read(&dir.path().join("nope"), &Filter::default(), None).unwrap();
        assert!(v.is_empty() && off == 0);
        assert!(Follower::new(dir.path().join("nope"), 0)
            .poll(&Filter::default())
            .unwrap()
            .is_empty());
    }
}
