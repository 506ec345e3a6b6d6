//! When a failed upstream request may go to another replica, and the count of retries.
//!
//! Rules (at most one retry per request, always on a different replica):
//! - the connection could not be made (refused, unreachable, connect timeout): nothing
//!   was sent, so any method is retried;
//! - the connection was reset or closed before a complete response head arrived, for
//!   an idempotent method (GET, HEAD, OPTIONS, PUT, DELETE, TRACE) whose body can be
//!   sent again (none, or small enough to have been kept: see `request_body`);
//! - anything else (a response head arrived, an invalid response, the client's body
//!   failed or was too large, a timeout waiting for the response) is never retried.
//!
//! A connection closed after a *partial* response head counts as reset too: the
//! request is idempotent and the client has received nothing, so this is safe.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use http::Method;

use crate::upstream::UpstreamError;

/// How an upstream request failed, as far as retrying goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// No connection was made; `timed_out` when the connect timeout expired.
    Connect { timed_out: bool },
    /// The connection was reset or closed before a response head arrived.
    Reset,
    /// Anything else.
    Other,
}

impl Failure {
    /// Classifies an error of the upstream client.
    pub(crate) fn of(error: &UpstreamError) -> Failure {
        match error {
            UpstreamError::Connect { timed_out, .. } => Failure::Connect {
                timed_out: *timed_out,
            },
            UpstreamError::Reset(_) => Failure::Reset,
            UpstreamError::Io(_)
            | UpstreamError::Protocol(_)
            | UpstreamError::Body(_)
            | UpstreamError::Timeout => Failure::Other,
        }
    }

    /// The label of the retry counter.
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Failure::Connect { .. } => "connect",
            Failure::Reset => "reset",
            Failure::Other => "other",
        }
    }
}

/// Safe to send twice (RFC 9110 §9.2.2).
pub(crate) fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// Whether a first attempt that failed this way may be sent to another replica.
/// `replayable`: the request body can be sent again from its start.
pub(crate) fn may_retry(method: &Method, failure: Failure, replayable: bool) -> bool {
    match failure {
        Failure::Connect { .. } => replayable,
        Failure::Reset => replayable && is_idempotent(method),
        Failure::Other => false,
    }
}

/// Retries per (app, reason), monotonic, for `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct Retries {
    by: Mutex<HashMap<(Arc<str>, &'static str), u64>>,
}

impl Retries {
    pub(crate) fn count(&self, app: &Arc<str>, failure: Failure) {
        let mut by = self.by.lock().unwrap_or_else(|e| e.into_inner());
        *by.entry((app.clone(), failure.reason())).or_default() += 1;
    }

    /// Prometheus text of the retry counter.
    pub(crate) fn prometheus(&self) -> String {
        let by = self.by.lock().unwrap_or_else(|e| e.into_inner());
        let mut rows: Vec<_> = by
            .iter()
            .map(|((app, reason), n)| (app.clone(), *reason, *n))
            .collect();
        drop(by);
        rows.sort();
        let mut out = String::from(
            "# HELP wharf_router_retries_total Requests sent again to another replica, by app and reason.\n\
             # TYPE wharf_router_retries_total counter\n",
        );
        for (app, reason, n) in rows {
            out.push_str(&format!(
                "wharf_router_retries_total{{app=\"{app}\",reason=\"{reason}\"}} {n}\n"
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions() {
        let connect = Failure::Connect { timed_out: false };
        for m in [Method::GET, Method::POST, Method::PATCH, Method::CONNECT] {
            assert!(may_retry(&m, connect, true), "{m}: nothing was sent");
            assert!(!may_retry(&m, connect, false), "{m}: body gone");
        }
        for m in ["GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"] {
            let m = Method::from_bytes(m.as_bytes()).unwrap();
            assert!(may_retry(&m, Failure::Reset, true), "{m}");
            assert!(!may_retry(&m, Failure::Reset, false), "{m}: body not kept");
            assert!(!may_retry(&m, Failure::Other, true), "{m}");
        }
        for m in [Method::POST, Method::PATCH, Method::CONNECT] {
            assert!(
                !may_retry(&m, Failure::Reset, true),
                "{m} is not idempotent"
            );
        }
    }

    #[test]
    fn counts_by_app_and_reason() {
        let r = Retries::default();
        let app: Arc<str> = Arc::from("shop");
        r.count(&app, Failure::Reset);
        r.count(&app, Failure::Reset);
        r.count(&app, Failure::Connect { timed_out: true });
        let text = r.prometheus();
        assert!(
            text.contains("wharf_router_retries_total{app=\"shop\",reason=\"reset\"} 2"),
            "{text}"
        );
        assert!(text.contains("reason=\"connect\"} 1"), "{text}");
    }
}
