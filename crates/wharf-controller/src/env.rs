//! The environment of app processes.

use std::collections::BTreeMap;
use wharf_types::spec::Image;
use wharf_types::Release;

/// Variables of the server's own environment that app processes inherit, so that
/// `node`, `python3` and friends are found.
const INHERITED: &[&str] = &["PATH", "HOME", "LANG", "TZ", "USER", "TERM"];

/// Who a process is, for the `WHARF_*` variables.
pub(crate) struct Identity<'a> {
    pub process: &'a str,
    pub replica: Option<&'a str>,
    pub port: Option<u16>,
}

/// Inherited variables (or, on an OCI image, the image's environment), then the
/// release's config, then PORT and the WHARF_* identity.
pub(crate) fn process_env(
    release: &Release,
    image: Option<&Image>,
    who: &Identity<'_>,
) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = match image {
        Some(image) => image
            .env
            .iter()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        None => INHERITED
            .iter()
            .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
            .collect(),
    };
    env.extend(release.env.clone());
    if let Some(port) = who.port {
        env.insert("PORT".into(), port.to_string());
    }
    env.insert("WHARF_APP".into(), release.app.to_string());
    env.insert("WHARF_PROCESS".into(), who.process.to_string());
    env.insert("WHARF_RELEASE".into(), release.version.to_string());
    if let Some(id) = who.replica {
        env.insert("WHARF_REPLICA".into(), id.to_string());
    }
    env
}
