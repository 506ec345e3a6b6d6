//! The router: host routing, 404/503, forwarded headers and request ids.

use std::time::Duration;
use wharf_e2e::{wait_until, Server, TestApp};

/// The `name: value` lines testapp's `/headers` echoes, names lowercased.
fn echoed(body: &str, name: &str) -> Vec<String> {
    body.lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim().to_string())
        .collect()
}

#[test]
fn unknown_host_is_404_and_no_ready_replica_is_503() {
    let s = Server::start();
    let r = s.get("nobody.localhost", "/");
    assert_eq!(r.status, 404, "{r:?}");
    assert!(
        !r.body.is_empty() && r.body.len() < 200,
        "a short plain-text body: {r:?}"
    );

    let app = TestApp::new("gone-quiet").write();
    s.deploy(app.path()).ok("deploy");
    assert_eq!(s.get("gone-quiet.localhost", "/").status, 200);
    // Any port in the Host header.
    let host_with_port = format!("gone-quiet.localhost:{}", s.port());
    assert_eq!(s.get(&host_with_port, "/").status, 200);
    assert_eq!(
        s.get("GONE-QUIET.localhost", "/").status,
        200,
        "hosts are case-insensitive"
    );

    s.wharf(&["scale", "gone-quiet", "web=0"]).ok("scale web=0");
    let mut last = None;
    assert!(
        wait_until(Duration::from_secs(10), || {
            let r = s.get("gone-quiet.localhost", "/");
            let done = r.status == 503;
            last = Some(r);
            done
        }),
        "no ready replica should answer 503; last: {last:?}"
    );
    assert!(
        wait_until(Duration::from_secs(10), || s.ps("gone-quiet").is_empty()),
        "{:#?}",
        s.ps("gone-quiet")
    );
    assert_eq!(s.get("nobody.localhost", "/").status, 404);

    s.wharf(&["scale", "gone-quiet", "web=1"]).ok("scale web=1");
    assert!(
        wait_until(Duration::from_secs(10), || s
            .get("gone-quiet.localhost", "/")
            .status
            == 200),
        "it serves again once scaled back up"
    );
}

#[test]
fn forwarded_headers_and_request_id_reach_the_app() {
    let s = Server::start();
    let app = TestApp::new("headers").write();
    s.deploy(app.path()).ok("deploy");

    let r = s.get_with(
        "headers.localhost",
        "/headers",
        &[("X-Request-Id", "e2e-req-12345")],
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        echoed(&r.body, "x-request-id"),
        vec!["e2e-req-12345"],
        "an incoming X-Request-Id is kept:\n{}",
        r.body
    );
    let xff = echoed(&r.body, "x-forwarded-for");
    assert!(
        xff.len() == 1 && xff[0].ends_with("127.0.0.1"),
        "X-Forwarded-For should carry the client address:\n{}",
        r.body
    );
    assert_eq!(
        echoed(&r.body, "x-forwarded-proto"),
        vec!["http"],
        "{}",
        r.body
    );
    assert_eq!(
        r.header("x-request-id"),
        Some("e2e-req-12345"),
        "the request id is returned: {:?}",
        r.headers
    );

    // Without one, the router makes one up, gives it to the app and returns it.
    let r = s.get("headers.localhost", "/headers");
    let ids = echoed(&r.body, "x-request-id");
    assert_eq!(ids.len(), 1, "{}", r.body);
    assert!(!ids[0].is_empty());
    assert_eq!(
        r.header("x-request-id"),
        Some(ids[0].as_str()),
        "{:?}",
        r.headers
    );
    let r2 = s.get("headers.localhost", "/headers");
    assert_ne!(
        echoed(&r2.body, "x-request-id"),
        ids,
        "each request gets its own id"
    );

    // An existing X-Forwarded-For is appended to.
    let r = s.get_with(
        "headers.localhost",
        "/headers",
        &[("X-Forwarded-For", "203.0.113.7")],
    );
    let xff = echoed(&r.body, "x-forwarded-for").join(",");
    assert!(
        xff.contains("203.0.113.7") && xff.contains("127.0.0.1"),
        "X-Forwarded-For should keep the earlier hop and add the client: {xff:?}"
    );
}

#[test]
fn manifest_hosts_route_to_the_app() {
    let s = Server::start();
    let app = TestApp::new("custom")
        .host("custom.example.test")
        .host("*.wild.example.test")
        .write();
    s.deploy(app.path()).ok("deploy");
    for host in [
        "custom.example.test",
        "custom.localhost",
        "anything.wild.example.test",
    ] {
        let r = s.get(host, "/");
        assert_eq!(r.status, 200, "Host: {host}: {r:?}");
        assert!(r.body.starts_with("Hello from testapp"), "{r:?}");
    }
    assert_eq!(s.get("other.example.test", "/").status, 404);
    let apps = s.apps();
    let hosts = apps[0]["hosts"].to_string();
    assert!(hosts.contains("custom.example.test"), "{apps:#?}");
}

#[test]
fn two_apps_share_a_host_by_path_prefix() {
    let s = Server::start();
    let web = TestApp::new("shop-web").host("shop.example.test").write();
    let api = TestApp::new("shop-api")
        .host("shop.example.test")
        .extra("paths = [\"/env\"]")
        .write();
    s.deploy(web.path()).ok("deploy shop-web");
    s.deploy(api.path())
        .ok("deploy shop-api on the same host under /env");

    // /env/... goes to shop-api, with the path unchanged (testapp reads its own env)
    let r = s.get("shop.example.test", "/env/WHARF_APP");
    assert_eq!((r.status, r.body.trim()), (200, "shop-api"), "{r:?}");
    // everything else to shop-web: its replica answers /
    let web_replica = s.ps("shop-web")[0]["id"]
        .as_str()
        .expect("replica id")
        .to_string();
    let r = s.get("shop.example.test", "/");
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        r.body.contains(&format!("replica={web_replica}")),
        "{web_replica}: {r:?}"
    );
    // each app keeps its own host whole
    let r = s.get("shop-web.localhost", "/env/WHARF_APP");
    assert_eq!(r.body.trim(), "shop-web", "{r:?}");

    let apps = s.apps();
    let api_status = apps
        .iter()
        .find(|a| a["name"] == "shop-api")
        .expect("shop-api listed");
    assert_eq!(
        api_status["paths"],
        serde_json::json!(["/env"]),
        "{apps:#?}"
    );

    // a third app claiming the same host and prefix is refused, naming the owner
    let dup = TestApp::new("shop-dup")
        .host("shop.example.test")
        .extra("paths = [\"/env\"]")
        .write();
    let out = s.deploy(dup.path());
    out.expect_code(2, "deploy of a taken host and prefix");
    assert!(out.all().contains("shop-api"), "{}", out.all());
    assert!(out.all().contains("/env"), "{}", out.all());
}
