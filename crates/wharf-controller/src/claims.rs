//! Who serves which host and path prefix. Several apps may share a host with different
//! path prefixes; a deploy claiming a (host, prefix) pair that another app's current
//! release serves is refused, naming that app, before anything is built.

use wharf_types::route_options::RouteOptions;
use wharf_types::AppName;

use crate::{ControlError, Inner};

/// The hosts an app is routed at: `APP.localhost`, then the manifest's.
pub(crate) fn hosts(app: &AppName, extra: &[String]) -> Vec<String> {
    let mut hosts = vec![format!("{app}.localhost")];
    for host in extra {
        if !hosts.contains(host) {
            hosts.push(host.clone());
        }
    }
    hosts
}

/// The first (host, prefix) pair both claims share.
fn shared<'a>(
    (hosts, options): (&'a [String], &'a RouteOptions),
    (other_hosts, other_options): (&[String], &RouteOptions),
) -> Option<(&'a str, &'a str)> {
    hosts
        .iter()
        .filter(|h| other_hosts.contains(h))
        .flat_map(|h| options.prefixes().map(move |p| (h.as_str(), p)))
        .find(|(_, p)| other_options.prefixes().any(|q| q == *p))
}

/// Refuses `app` claiming `extra` hosts (besides its own) with `options` when another
/// app's target release serves one of the same (host, prefix) pairs.
pub(crate) fn check(
    inner: &Inner,
    app: &AppName,
    extra: &[String],
    options: &RouteOptions,
) -> Result<(), ControlError> {
    let mine = hosts(app, extra);
    let others: Vec<(AppName, u32)> = match inner.apps.lock() {
        Ok(apps) => apps
            .values()
            .filter(|a| &a.name != app)
            .filter_map(|a| Some((a.name.clone(), a.target?)))
            .collect(),
        Err(_) => {
            return Err(ControlError::conflict(
                "the app list is unavailable; try again",
            ))
        }
    };
    for (other, version) in others {
        let Some(release) = inner.release(&other, version) else {
            continue;
        };
        let theirs = hosts(&other, &release.hosts);
        if let Some((host, prefix)) = shared((&mine, options), (&theirs, &release.route)) {
            return Err(ControlError::bad_input(format!(
                "host {host:?} with path {prefix:?} is already routed to app `{other}`; \
                 give this app other [route] hosts or paths, or change `{other}` first"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(paths: &[&str]) -> RouteOptions {
        RouteOptions {
            paths: paths.iter().map(|p| p.to_string()).collect(),
            ..RouteOptions::default()
        }
    }

    #[test]
    fn same_host_and_prefix_conflict_other_prefixes_do_not() {
        let host = vec!["shop.test".to_string()];
        let (api, web) = (options(&["/api"]), options(&[]));
        assert_eq!(shared((&host, &api), (&host, &web)), None);
        assert_eq!(
            shared((&host, &web), (&host, &options(&["/x", "/"]))),
            Some(("shop.test", "/"))
        );
        assert_eq!(
            shared((&host, &options(&["/a", "/api"])), (&host, &api)),
            Some(("shop.test", "/api"))
        );
        let other = vec!["other.test".to_string()];
        assert_eq!(shared((&host, &web), (&other, &web)), None);
    }

    #[test]
    fn own_host_comes_first_once() {
        let app = AppName::new("shop").unwrap();
        assert_eq!(
            hosts(
                &app,
                &[
                    "shop.localhost".into(),
                    "shop.test".into(),
                    "shop.test".into()
                ]
            ),
            ["shop.localhost", "shop.test"]
        );
    }
}
