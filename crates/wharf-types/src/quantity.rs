//! Human quantities in config: durations (`"1s"`, `"5m"`) and memory sizes (`"256Mi"`).

use serde::{Deserialize, Deserializer, Serializer};
use std::time::Duration;

/// Parses a humantime duration such as `500ms`, `2s`, `5m`, `1h 30m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| {
        format!("invalid duration {s:?} ({e}); use forms like \"500ms\", \"2s\", \"5m\"")
    })
}

/// Formats a duration the way `parse_duration` reads it back.
pub fn format_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// Parses a memory size: plain bytes, binary suffixes `Ki Mi Gi Ti`, decimal `k/K M G T`.
pub fn parse_memory(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let bad = || format!("invalid memory size {s:?}; use forms like \"256Mi\", \"1Gi\", \"512M\"");
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| bad())?;
    let mult: u64 = match unit {
        "" | "B" => 1,
        "k" | "K" | "KB" => 1_000,
        "M" | "MB" => 1_000_000,
        "G" | "GB" => 1_000_000_000,
        "T" | "TB" => 1_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        _ => return Err(bad()),
    };
    let v = n.checked_mul(mult).ok_or_else(bad)?;
    if v == 0 {
        return Err(format!("memory size {s:?} must be greater than zero"));
    }
    Ok(v)
}

/// Formats bytes with the largest exact binary suffix.
pub fn format_memory(bytes: u64) -> String {
    for (suffix, shift) in [("Ti", 40), ("Gi", 30), ("Mi", 20), ("Ki", 10)] {
        if bytes >= (1 << shift) && bytes.is_multiple_of(1 << shift) {
            return format!("{}{suffix}", bytes >> shift);
        }
    }
    bytes.to_string()
}

/// serde adapter: a `Duration` stored as a humantime string.
pub mod duration_str {
    use super::*;
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(*d))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1s").unwrap(), Duration::from_secs(1));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1h 30m").unwrap(), Duration::from_secs(5400));
        assert!(parse_duration("soon").unwrap_err().contains("\"soon\""));
        assert!(parse_duration("10").is_err());
        assert_eq!(
            parse_duration(&format_duration(Duration::from_millis(1500))).unwrap(),
            Duration::from_millis(1500)
        );
    }

    #[test]
    fn memory() {
        assert_eq!(parse_memory("256Mi").unwrap(), 256 << 20);
        assert_eq!(parse_memory("1Gi").unwrap(), 1 << 30);
        assert_eq!(parse_memory("512M").unwrap(), 512_000_000);
        assert_eq!(parse_memory("4096").unwrap(), 4096);
        for bad in [
            "",
            "Mi",
            "12 parsecs",
            "1.5Gi",
            "-1Mi",
            "0",
            "99999999999999Ti",
        ] {
            assert!(parse_memory(bad).is_err(), "{bad}");
        }
        assert_eq!(format_memory(256 << 20), "256Mi");
        assert_eq!(format_memory(1000), "1000");
    }
}
