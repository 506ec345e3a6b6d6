//! The `[secrets]` table: delivery and rotation.

use super::error::Locator;
use super::raw::RawSecrets;
use super::validate::valid_env_name;
use super::ManifestError;
use crate::quantity::parse_duration;
use crate::secret::RotateSpec;
use std::collections::BTreeMap;

/// Shortest rotation period accepted (keeps a typo like "30s" for "30d" survivable).
const MIN_EVERY_MS: u64 = 1_000;

/// `[secrets]`: whether values are delivered as files (`as = "files"`, on a tmpfs at
/// `/run/secrets/NAME`) rather than environment variables, and the rotations.
pub(crate) fn validate(
    raw: RawSecrets,
    loc: &Locator<'_>,
) -> Result<(bool, BTreeMap<String, RotateSpec>), ManifestError> {
    let files = match raw.delivery.as_deref() {
        None | Some("env") => false,
        Some("files") => true,
        Some(other) => {
            return Err(loc.at(
                &["secrets", "as"],
                format!("unknown secret delivery {other:?}; use \"env\" or \"files\""),
            ))
        }
    };
    let mut out = BTreeMap::new();
    for (name, r) in raw.rotate {
        let at = |field: &str, msg: String| loc.at(&["secrets", "rotate", &name, field], msg);
        if !valid_env_name(&name) || name == "PORT" || name.starts_with("WHARF_") {
            return Err(loc.at(
                &["secrets", "rotate", &name],
                format!("invalid secret name {name:?}; use letters, digits and '_', not PORT or WHARF_*"),
            ));
        }
        let every = r
            .every
            .ok_or_else(|| at("every", "missing `every`, e.g. every = \"30d\"".into()))?;
        let every = parse_duration(&every).map_err(|e| at("every", e))?;
        let every_ms = u64::try_from(every.as_millis()).unwrap_or(u64::MAX);
        if every_ms < MIN_EVERY_MS {
            return Err(at("every", "rotation period must be at least 1s".into()));
        }
        let command = match r.command {
            Some(c) if !c.trim().is_empty() => c,
            _ => {
                return Err(at(
                    "command",
                    "missing or empty `command` (it prints the new value)".into(),
                ))
            }
        };
        let check = r.check.filter(|c| !c.trim().is_empty());
        out.insert(
            name,
            RotateSpec {
                every_ms,
                command,
                check,
            },
        );
    }
    Ok((files, out))
}
