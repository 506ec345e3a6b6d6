//! `[route] tls = { cert, key }` and `https_only`: checked for shape here; the files
//! themselves are read (and the key matched to the certificate) at deploy time, where
//! the app directory is known.

use super::error::Locator;
use super::raw::RawRoute;
use super::ManifestError;
use crate::route::{RouteTls, TlsFiles};

/// Takes the TLS keys out of `route` and validates them.
pub(crate) fn validate(route: &mut RawRoute, loc: &Locator<'_>) -> Result<RouteTls, ManifestError> {
    let files = match route.tls.take() {
        None => None,
        Some(raw) => {
            let field = |name: &'static str, value: Option<String>| {
                match value {
                Some(v) if !v.trim().is_empty() => Ok(v.into()),
                _ => Err(loc.at(
                    &["route", "tls", name],
                    format!("missing or empty `{name}`; write tls = {{ cert = \"cert.pem\", key = \"key.pem\" }} (paths relative to the app directory, or absolute)"),
                )),
            }
            };
            Some(TlsFiles {
                cert: field("cert", raw.cert)?,
                key: field("key", raw.key)?,
            })
        }
    };
    Ok(RouteTls {
        files,
        https_only: route.https_only.take().unwrap_or(false),
    })
}

#[cfg(test)]
mod tests {
    use crate::manifest::parse_manifest;
    use std::path::Path;

    const WEB: &str = "app = \"a\"\n[process.web]\ncommand = \"x\"\n";

    #[test]
    fn tls_files_and_https_only() {
        let text = format!(
            "{WEB}[route]\nhosts = [\"a.example.com\"]\ntls = {{ cert = \"c.pem\", key = \"/etc/k.pem\" }}\nhttps_only = true\n"
        );
        let m = parse_manifest(&text, "wharf.toml", None, None).expect("valid");
        let files = m.tls.files.expect("files");
        assert_eq!(files.cert, Path::new("c.pem"));
        assert_eq!(files.key, Path::new("/etc/k.pem"));
        assert!(m.tls.https_only);
        let plain = parse_manifest(WEB, "wharf.toml", None, None).expect("valid");
        assert_eq!(plain.tls, Default::default());
    }

    #[test]
    fn missing_key_and_unknown_field_are_located() {
        let text = format!("{WEB}[route]\ntls = {{ cert = \"c.pem\" }}\n");
        let e = parse_manifest(&text, "wharf.toml", None, None).expect_err("no key");
        assert_eq!(e.field.as_deref(), Some("route.tls.key"), "{e}");
        assert_eq!(e.line, 5, "{e}");
        assert!(e.message.contains("missing or empty `key`"), "{e}");
        let text = format!("{WEB}[route]\ntls = {{ cert = \"c\", key = \"k\", chain = \"x\" }}\n");
        let e = parse_manifest(&text, "wharf.toml", None, None).expect_err("unknown");
        assert!(e.message.contains("unknown field"), "{e}");
        let text = format!("{WEB}[route]\nhttps_only = \"yes\"\n");
        let e = parse_manifest(&text, "wharf.toml", None, None).expect_err("type");
        assert_eq!(e.field.as_deref(), Some("route.https_only"), "{e}");
    }
}
