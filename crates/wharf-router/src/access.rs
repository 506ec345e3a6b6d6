//! The access log: one JSON line per request, written when its response body ends (so
//! that the byte count is the real one), through `tracing` with target `wharf::access`.

use std::sync::Arc;
use std::time::Instant;

/// The `tracing` target of access-log lines.
pub(crate) const TARGET: &str = "wharf::access";

/// What the line says about one request.
#[derive(Debug)]
pub(crate) struct Entry {
    pub started: Instant,
    pub method: http::Method,
    pub path: String,
    pub host: String,
    pub app: Option<Arc<str>>,
    pub release: Option<u32>,
    pub replica: Option<Arc<str>>,
    pub status: u16,
    pub request_id: String,
    pub bytes: u64,
    /// Times the request was sent again to another replica (0 or 1).
    pub retries: u32,
    /// Why the proxy answered itself (no replica, upstream failure...), if it did.
    pub error: Option<String>,
}

impl Entry {
    /// The JSON line.
    pub(crate) fn line(&self) -> String {
        serde_json::json!({
            "method": self.method.as_str(),
            "host": self.host,
            "path": self.path,
            "app": self.app.as_deref(),
            "release": self.release,
            "replica": self.replica.as_deref(),
            "status": self.status,
            "bytes": self.bytes,
            "duration_ms": self.started.elapsed().as_secs_f64() * 1000.0,
            "request_id": self.request_id,
            "retries": self.retries,
            "error": self.error,
        })
        .to_string()
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        tracing::info!(target: TARGET, "{}", self.line());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_has_every_field() {
        let e = Entry {
            started: Instant::now(),
            method: http::Method::GET,
            path: "/x".into(),
            host: "a.localhost".into(),
            app: Some(Arc::from("a")),
            release: Some(3),
            replica: Some(Arc::from("web-1-v3")),
            status: 200,
            request_id: "abc".into(),
            bytes: 12,
            retries: 1,
            error: Some("upstream unavailable: invalid response".into()),
        };
        let v: serde_json::Value = serde_json::from_str(&e.line()).unwrap();
        for (k, want) in [
            ("app", "a"),
            ("replica", "web-1-v3"),
            ("request_id", "abc"),
            ("path", "/x"),
        ] {
            assert_eq!(v[k], want);
        }
        assert_eq!(v["release"], 3);
        assert_eq!(v["status"], 200);
        assert_eq!(v["bytes"], 12);
        assert_eq!(v["retries"], 1);
        assert_eq!(v["error"], "upstream unavailable: invalid response");
        assert!(v["duration_ms"].as_f64().unwrap() >= 0.0);
    }
}
