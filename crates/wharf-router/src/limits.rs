//! Per-route timeouts and body limit: the route's `[route]` settings over the router's
//! defaults. The upstream client (`upstream`) takes the connect timeout per request.
//!
//! - `connect`: establishing the TCP connection to a replica (then the request goes
//!   once to another replica; with none left, 504).
//! - `response`: from sending the request to the replica's response head (504).
//! - `idle`: the longest pause between two reads of a body in flight: the client's
//!   request body (408 when nothing was answered yet, else the exchange is aborted) and
//!   the replica's response body (the client's response is cut off). Idle keep-alive
//!   connections between requests are a separate, global matter (hyper's header read
//!   timeout downstream, the pool's idle timeout upstream).
//! - `max_body`: request bodies above it get 413, at once when `Content-Length` says
//!   so, else as soon as the streamed body crosses it (the upstream request is aborted).

use std::time::Duration;

use wharf_types::route_options::RouteOptions;

use crate::RouterConfig;

/// One route's effective limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    pub connect: Duration,
    pub response: Duration,
    pub idle: Duration,
    pub max_body: u64,
}

impl Limits {
    pub(crate) fn resolve(options: &RouteOptions, defaults: &RouterConfig) -> Limits {
        let ms = |v: Option<u64>, default| v.map_or(default, Duration::from_millis);
        Limits {
            connect: ms(options.connect_timeout_ms, defaults.connect_timeout),
            response: ms(options.response_timeout_ms, defaults.response_timeout),
            idle: ms(options.idle_timeout_ms, defaults.idle_timeout),
            max_body: options.max_body.unwrap_or(defaults.max_body),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_settings_override_defaults() {
        let defaults = RouterConfig::default();
        let plain = Limits::resolve(&RouteOptions::default(), &defaults);
        assert_eq!(plain.connect, defaults.connect_timeout);
        assert_eq!(plain.response, defaults.response_timeout);
        assert_eq!(plain.idle, defaults.idle_timeout);
        assert_eq!(plain.max_body, defaults.max_body);
        let set = Limits::resolve(
            &RouteOptions {
                connect_timeout_ms: Some(100),
                response_timeout_ms: Some(200),
                idle_timeout_ms: Some(300),
                max_body: Some(400),
                ..RouteOptions::default()
            },
            &defaults,
        );
        assert_eq!(
            set,
            Limits {
                connect: Duration::from_millis(100),
                response: Duration::from_millis(200),
                idle: Duration::from_millis(300),
                max_body: 400
            }
        );
    }
}
