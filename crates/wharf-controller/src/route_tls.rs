//! Deploy-time checks of the manifest's `[route]` HTTPS settings.
//!
//! Certificate paths are resolved against the app directory, made canonical and
//! absolute, and checked by the data plane (readable PEM, key matching the certificate)
//! before any build starts. Only the paths enter the release; the router reads the
//! files (and re-reads them when they change), so no private key is copied into the
//! store.

use std::path::{Path, PathBuf};

use wharf_core::ports::RouteSink;
use wharf_types::route::{RouteTls, TlsFiles};

use crate::ControlError;

/// `tls` with absolute, canonical certificate paths, or the user's mistake (exit 2).
/// Also returns notes for the deploy's progress.
pub(crate) fn resolve(
    dir: &Path,
    tls: &RouteTls,
    routes: &dyn RouteSink,
) -> Result<(RouteTls, Vec<String>), ControlError> {
    let manifest = dir.join("wharf.toml");
    let at = |field: &str, message: String| {
        ControlError::bad_input(format!(
            "{}: field `route.{field}`: {message}",
            manifest.display()
        ))
    };
    if tls.https_only && routes.https_port().is_none() {
        return Err(at(
            "https_only",
            "the server has no HTTPS listener; start it with --listen-tls 127.0.0.1:8443 (`wharf up` does), or remove https_only".into(),
        ));
    }
    let mut notes = Vec::new();
    let files = match &tls.files {
        None => None,
        Some(files) => {
            let absolute = |field: &str, path: &Path| -> Result<PathBuf, ControlError> {
                let joined = if path.is_absolute() {
                    path.to_path_buf()
                } else {
                    dir.join(path)
                };
                std::fs::canonicalize(&joined)
                    .map_err(|e| at(field, format!("cannot read {}: {e}", joined.display())))
            };
            let cert = absolute("tls.cert", &files.cert)?;
            let key = absolute("tls.key", &files.key)?;
            routes
                .check_certificate(&cert, &key)
                .map_err(|message| at("tls", message))?;
            if key.starts_with(std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf())) {
                notes.push(format!(
                    "note: the TLS key {} is inside the app directory, so it is copied into the release; keep keys elsewhere (an absolute path like /etc/ssl/private/...)",
                    key.display()
                ));
            }
            Some(TlsFiles { cert, key })
        }
    };
    Ok((
        RouteTls {
            files,
            https_only: tls.https_only,
        },
        notes,
    ))
}
