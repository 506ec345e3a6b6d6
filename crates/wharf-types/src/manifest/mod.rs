//! The app manifest: `wharf.toml`, or a bare `Procfile`.
//!
//! Parsing is two passes. serde reads the document into raw structs (unknown keys and
//! wrong types are refused there); then `validate` turns them into a [`Manifest`], checking
//! what serde cannot (names, durations, sizes, ports, probes). Every error carries the
//! file, line, column and dotted field path, found from the span of the offending text.

mod error;
mod procfile;
mod raw;
mod route;
mod route_tls;
mod secrets;
mod validate;

pub use error::ManifestError;
pub use procfile::parse_procfile;
pub use validate::{valid_env_name, valid_host, MAX_REPLICAS};

use crate::{AppName, ProcessSpec, ProcessType};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A validated manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub app: AppName,
    /// Build command, run once per release in a copy of the app directory.
    pub build: Option<String>,
    pub env: BTreeMap<String, String>,
    pub processes: BTreeMap<ProcessType, ProcessSpec>,
    /// Extra hosts routed to the `web` process (besides `APP.localhost`).
    pub hosts: Vec<String>,
    /// `[route]` HTTPS settings (paths as written, relative to the app directory).
    #[serde(default)]
    pub tls: crate::route::RouteTls,
    /// `[secrets.rotate]`: secrets wharf rotates by running a command.
    #[serde(default)]
    pub rotate: BTreeMap<String, crate::secret::RotateSpec>,
    /// `[secrets] as = "files"`: values as files on a tmpfs at `/run/secrets/NAME`.
    #[serde(default)]
    pub secrets_as_files: bool,
    /// `[route]` paths, balancing, timeouts and body limit.
    #[serde(default)]
    pub route: crate::route_options::RouteOptions,
}

/// Parses `wharf.toml` text. `file` names the file in errors; `default_app` (usually the
/// directory name) is used when the manifest has no `app` key; `procfile` supplies the
/// processes when the manifest declares none.
pub fn parse_manifest(
    text: &str,
    file: &str,
    default_app: Option<&str>,
    procfile: Option<(&str, &str)>,
) -> Result<Manifest, ManifestError> {
    let raw: raw::RawManifest =
        toml::from_str(text).map_err(|e| error::from_toml(text, file, &e))?;
    let locator = error::Locator::new(text, file);
    let mut m = validate::validate(raw, &locator, default_app)?;
    if m.processes.is_empty() {
        match procfile {
            Some((ptext, pfile)) => m.processes = parse_procfile(ptext, pfile)?,
            None => {
                return Err(locator.at(
                    &["process"],
                    "no process declared; add a [process.web] table with a command, or a Procfile",
                ))
            }
        }
    }
    Ok(m)
}

/// A manifest made from a Procfile alone.
pub fn manifest_from_procfile(
    text: &str,
    file: &str,
    app: &str,
) -> Result<Manifest, ManifestError> {
    let app = AppName::new(app)
        .map_err(|e| ManifestError::whole_file(file, format!("{e}; pass --app NAME")))?;
    Ok(Manifest {
        app,
        build: None,
        env: BTreeMap::new(),
        processes: parse_procfile(text, file)?,
        hosts: Vec::new(),
        tls: Default::default(),
        rotate: BTreeMap::new(),
        secrets_as_files: false,
        route: Default::default(),
    })
}

#[cfg(test)]
mod tests;
