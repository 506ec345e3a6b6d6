//! The `[route]` table besides `hosts`: path prefixes, balancing, timeouts, body limit.

use super::error::Locator;
use super::raw::RawRoute;
use super::ManifestError;
use crate::quantity::{parse_duration, parse_memory};
use crate::route_options::{check_prefix, RouteOptions};

/// Validates `[route]` paths, `balance`, `timeouts` and `max_body`.
pub(crate) fn validate(raw: &RawRoute, loc: &Locator<'_>) -> Result<RouteOptions, ManifestError> {
    let mut options = RouteOptions::default();
    if let Some(paths) = &raw.paths {
        let at = |msg: String| loc.at(&["route", "paths"], msg);
        if paths.is_empty() {
            return Err(at(
                "paths is empty; remove it to serve every path, or list prefixes like [\"/api\"]"
                    .into(),
            ));
        }
        for (i, p) in paths.iter().enumerate() {
            check_prefix(p).map_err(at)?;
            if paths[..i].contains(p) {
                return Err(at(format!("path {p:?} is listed twice")));
            }
        }
        options.paths = paths.clone();
    }
    if let Some(b) = &raw.balance {
        options.balance = b.parse().map_err(|e| loc.at(&["route", "balance"], e))?;
    }
    if let Some(t) = &raw.timeouts {
        for (value, slot, name) in [
            (&t.connect, &mut options.connect_timeout_ms, "connect"),
            (&t.response, &mut options.response_timeout_ms, "response"),
            (&t.idle, &mut options.idle_timeout_ms, "idle"),
        ] {
            let Some(text) = value else { continue };
            let path = ["route", "timeouts", name];
            let d = parse_duration(text).map_err(|e| loc.at(&path, e))?;
            if d.is_zero() {
                return Err(loc.at(&path, "timeout must be greater than zero"));
            }
            *slot = Some(u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1));
        }
    }
    if let Some(size) = &raw.max_body {
        let bytes = parse_memory(size).map_err(|_| {
            loc.at(
                &["route", "max_body"],
                format!("invalid size {size:?}; use forms like \"10MB\", \"512KB\", \"1Mi\""),
            )
        })?;
        options.max_body = Some(bytes);
    }
    Ok(options)
}
