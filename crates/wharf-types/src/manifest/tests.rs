use super::*;
use crate::{Check, Strategy};

const FULL: &str = r#"
app = "sample-app"

[build]
command = "npm ci --omit=dev"

[env]
NODE_ENV = "production"
WORKERS = 4

[process.web]
command = "node app.js"
replicas = 3
cpu = 256
memory = "256Mi"
[process.web.readiness]
http = "/"
interval = "1s"
timeout = "2s"
[process.web.liveness]
http = "/"
[process.web.deploy]
strategy = "rolling"
max_surge = "100%"
max_unavailable = 0

[process.worker]
command = "node worker.js"

[route]
hosts = ["sample-app.localhost", "*.example.com"]
"#;

fn parse(text: &str) -> Result<Manifest, ManifestError> {
    parse_manifest(text, "wharf.toml", Some("dir-name"), None)
}

#[track_caller]
fn fails(text: &str, line: usize, field: Option<&str>, needle: &str) {
    let e = parse(text).expect_err("manifest should be refused");
    assert_eq!(e.file, "wharf.toml");
    assert_eq!(e.line, line, "line of {e}");
    assert_eq!(e.field.as_deref(), field, "field of {e}");
    assert!(
        e.to_string().contains(needle),
        "{e:?} should mention {needle:?}"
    );
}

#[test]
fn full_manifest_parses() {
    let m = parse(FULL).unwrap();
    assert_eq!(m.app.as_str(), "sample-app");
    assert_eq!(m.build.as_deref(), Some("npm ci --omit=dev"));
    assert_eq!(m.env["WORKERS"], "4");
    let web = &m.processes[&ProcessType::web()];
    assert_eq!(web.replicas, 3);
    assert_eq!(web.memory, Some(256 << 20));
    assert_eq!(
        web.readiness.as_ref().unwrap().check,
        Check::Http {
            path: "/".into(),
            status: None
        }
    );
    assert_eq!(web.deploy.strategy, Strategy::Rolling);
    let worker = &m.processes[&ProcessType::new("worker").unwrap()];
    assert_eq!(worker.replicas, 1);
    assert!(worker.readiness.is_none());
    assert_eq!(m.hosts.len(), 2);
}

#[test]
fn app_defaults_to_directory_name() {
    let m = parse("[process.web]\ncommand = \"x\"\n").unwrap();
    assert_eq!(m.app.as_str(), "dir-name");
    assert!(
        m.processes[&ProcessType::web()].readiness.is_some(),
        "web gets a tcp readiness probe"
    );
    let e = parse_manifest(
        "[process.web]\ncommand = \"x\"\n",
        "wharf.toml",
        Some("My_Dir"),
        None,
    )
    .unwrap_err();
    assert!(e.message.contains("--app"), "{e}");
}

#[test]
fn unknown_key_names_line_and_field() {
    fails(
        "[process.web]\ncommand = \"x\"\nreplcas = 3\n",
        3,
        Some("process.web.replcas"),
        "unknown field `replcas`",
    );
    fails("ap = \"x\"\n", 1, Some("ap"), "unknown field");
    fails("[process.web]\ncommand = \"x\"\n[process.web.readiness]\nhttp = \"/\"\nintervall = \"1s\"\n", 5, Some("process.web.readiness.intervall"), "unknown field");
}

#[test]
fn wrong_type_names_line_and_field() {
    fails(
        "[process.web]\ncommand = \"x\"\nreplicas = \"three\"\n",
        3,
        Some("process.web.replicas"),
        "invalid type",
    );
    fails(
        "app = 5\n[process.web]\ncommand = \"x\"\n",
        1,
        Some("app"),
        "invalid type",
    );
}

#[test]
fn bad_duration_and_memory() {
    fails("[process.web]\ncommand = \"x\"\n[process.web.readiness]\ntcp = true\ninterval = \"soon\"\n", 5, Some("process.web.readiness.interval"), "invalid duration");
    fails(
        "[process.web]\ncommand = \"x\"\nmemory = \"lots\"\n",
        3,
        Some("process.web.memory"),
        "invalid memory size",
    );
    fails(
        "[process.web]\ncommand = \"x\"\nstop_timeout = \"0s\"\n",
        3,
        Some("process.web.stop_timeout"),
        "greater than zero",
    );
}

#[test]
fn invalid_app_name() {
    fails(
        "app = \"Bad_Name\"\n[process.web]\ncommand = \"x\"\n",
        1,
        Some("app"),
        "invalid app name",
    );
}

#[test]
fn missing_command() {
    fails(
        "[process.web]\nreplicas = 2\n",
        1,
        Some("process.web"),
        "missing `command`",
    );
    fails(
        "[process.web]\ncommand = \"  \"\n",
        2,
        Some("process.web.command"),
        "empty",
    );
    fails(
        "[build]\n[process.web]\ncommand = \"x\"\n",
        1,
        Some("build.command"),
        "build command",
    );
}

#[test]
fn two_processes_on_one_port() {
    fails("[process.web]\ncommand = \"x\"\nport = 8080\n[process.admin]\ncommand = \"y\"\nport = 8080\n", 3, Some("process.web.port"), "already used by process `admin`");
}

#[test]
fn fixed_port_with_many_replicas() {
    fails(
        "[process.web]\ncommand = \"x\"\nreplicas = 2\nport = 8080\n",
        4,
        Some("process.web.port"),
        "one replica",
    );
}

#[test]
fn probes_need_exactly_one_check() {
    fails(
        "[process.web]\ncommand = \"x\"\n[process.web.readiness]\ninterval = \"1s\"\n",
        3,
        Some("process.web.readiness"),
        "exactly one",
    );
    fails(
        "[process.web]\ncommand = \"x\"\n[process.web.readiness]\nhttp = \"/\"\ntcp = true\n",
        3,
        Some("process.web.readiness"),
        "exactly one",
    );
    fails(
        "[process.web]\ncommand = \"x\"\n[process.web.liveness]\nhttp = \"health\"\n",
        4,
        Some("process.web.liveness.http"),
        "start with '/'",
    );
}

#[test]
fn deploy_settings() {
    fails(
        "[process.web]\ncommand = \"x\"\n[process.web.deploy]\nstrategy = \"yolo\"\n",
        4,
        Some("process.web.deploy.strategy"),
        "unknown strategy",
    );
    fails("[process.web]\ncommand = \"x\"\n[process.web.deploy]\nmax_surge = 0\nmax_unavailable = \"0%\"\n", 4, Some("process.web.deploy.max_surge"), "never progress");
}

#[test]
fn env_rules() {
    fails(
        "[env]\nPORT = \"1\"\n[process.web]\ncommand = \"x\"\n",
        2,
        Some("env.PORT"),
        "assigned by wharf",
    );
    fails(
        "[env]\n\"1X\" = \"1\"\n[process.web]\ncommand = \"x\"\n",
        2,
        Some("env.1X"),
        "invalid variable name",
    );
}

#[test]
fn hosts_are_checked() {
    fails(
        "[process.web]\ncommand = \"x\"\n[route]\nhosts = [\"Bad Host\"]\n",
        4,
        Some("route.hosts"),
        "invalid host",
    );
}

#[test]
fn no_process_without_procfile() {
    let e = parse("app = \"a\"\n").unwrap_err();
    assert!(e.message.contains("Procfile"), "{e}");
}

#[test]
fn procfile_supplies_processes() {
    let m = parse_manifest(
        "app = \"a\"\n",
        "wharf.toml",
        None,
        Some(("web: node app.js\n", "Procfile")),
    )
    .unwrap();
    assert_eq!(m.processes[&ProcessType::web()].command, "node app.js");
}

#[test]
fn syntax_error_is_located() {
    let e = parse("app = \"a\"\n[process.web\n").unwrap_err();
    assert_eq!(e.line, 2, "{e}");
}

#[test]
fn procfile_parsing() {
    let p = parse_procfile(
        "# comment\n\nweb: node app.js\nworker:  node w.js --x\n",
        "Procfile",
    )
    .unwrap();
    assert_eq!(p.len(), 2);
    assert_eq!(
        p[&ProcessType::new("worker").unwrap()].command,
        "node w.js --x"
    );
    let e = parse_procfile("web node app.js\n", "Procfile").unwrap_err();
    assert_eq!((e.line, e.file.as_str()), (1, "Procfile"));
    let e = parse_procfile("web: a\nweb: b\n", "Procfile").unwrap_err();
    assert_eq!(e.line, 2);
    assert!(e.message.contains("twice"));
    let e = parse_procfile("web:\n", "Procfile").unwrap_err();
    assert!(e.message.contains("no command"));
    assert!(parse_procfile("# nothing\n", "Procfile").is_err());
    let m = manifest_from_procfile("web: x\n", "Procfile", "my-app").unwrap();
    assert_eq!(m.app.as_str(), "my-app");
}

#[test]
fn secrets_rotate_is_parsed_and_checked() {
    let base = "[process.web]\ncommand = \"x\"\n";
    let m = parse(&format!(
        "{base}[secrets.rotate]\nDB = {{ every = \"30d\", command = \"mkpass\", check = \"test -n \\\"$DB\\\"\" }}\n"
    ))
    .unwrap();
    let r = &m.rotate["DB"];
    assert_eq!(r.every_ms, 30 * 86_400_000);
    assert_eq!(r.command, "mkpass");
    assert!(r.check.is_some());

    assert!(!m.secrets_as_files, "environment variables by default");
    let files = parse(&format!("{base}[secrets]\nas = \"files\"\n")).unwrap();
    assert!(files.secrets_as_files);
    let e = parse(&format!("{base}[secrets]\nas = \"carrier-pigeon\"\n")).unwrap_err();
    assert!(
        e.to_string().contains("secrets.as") && e.to_string().contains("\"files\""),
        "{e}"
    );
    let e = parse(&format!(
        "{base}[secrets.rotate]\nDB = {{ every = \"soon\", command = \"x\" }}\n"
    ))
    .unwrap_err();
    assert!(e.to_string().contains("secrets.rotate.DB.every"), "{e}");
    let e = parse(&format!(
        "{base}[secrets.rotate]\nDB = {{ every = \"1d\" }}\n"
    ))
    .unwrap_err();
    assert!(e.to_string().contains("command"), "{e}");
    let e = parse(&format!(
        "{base}[secrets.rotate]\nPORT = {{ every = \"1d\", command = \"x\" }}\n"
    ))
    .unwrap_err();
    assert!(e.to_string().contains("invalid secret name"), "{e}");
}

#[test]
fn images_are_oci_layouts() {
    let m = parse(
        "app = \"a\"\n[process.web]\ncommand = \"httpd\"\nimage = \"oci:images/busybox:1.36\"\n",
    )
    .unwrap();
    let web = &m.processes[&crate::ProcessType::web()];
    assert_eq!(
        web.image.as_ref().map(|i| i.reference.as_str()),
        Some("oci:images/busybox:1.36")
    );
    fails(
        "app = \"a\"\n[process.web]\ncommand = \"x\"\nimage = \"node:20\"\n",
        4,
        Some("process.web.image"),
        "oci:PATH",
    );
    fails(
        "app = \"a\"\n[process.web]\ncommand = \"x\"\nimage = \"oci:\"\n",
        4,
        Some("process.web.image"),
        "skopeo",
    );
}

#[test]
fn cpu_limit_is_in_cores() {
    let base = "[process.web]\ncommand = \"x\"\n";
    let limit = |line: &str| {
        parse(&format!("{base}{line}\n")).unwrap().processes[&ProcessType::web()].cpu_limit
    };
    assert_eq!(limit("cpu_limit = 0.5"), Some(500));
    assert_eq!(
        limit("cpu_limit = 2"),
        Some(2000),
        "an integer is whole cores"
    );
    assert_eq!(limit("cpu_limit = 0.01"), Some(10), "the smallest quota");
    assert_eq!(
        limit("cpu_limit = 0.2504"),
        Some(250),
        "rounded to millicores"
    );
    assert_eq!(limit("cpu = 512"), None, "no hard limit unless asked");
    for bad in ["0", "-1", "0.004", "1025", "nan", "inf"] {
        fails(
            &format!("{base}cpu_limit = {bad}\n"),
            3,
            Some("process.web.cpu_limit"),
            "cpu_limit is in cores",
        );
    }
    fails(
        &format!("{base}cpu_limit = \"half\"\n"),
        3,
        Some("process.web.cpu_limit"),
        "",
    );
}

#[test]
fn network_is_host_or_isolated() {
    let base = "[process.web]\ncommand = \"x\"\n";
    let net = |extra: &str| {
        parse(&format!("{base}{extra}")).unwrap().processes[&ProcessType::web()].network
    };
    assert_eq!(
        net(""),
        crate::Network::Host,
        "the host's network by default"
    );
    assert_eq!(net("network = \"host\"\n"), crate::Network::Host);
    assert_eq!(net("network = \"isolated\"\n"), crate::Network::Isolated);
    fails(
        &format!("{base}network = \"bridge\"\n"),
        3,
        Some("process.web.network"),
        "use \"host\" or \"isolated\"",
    );
    let isolated = parse(&format!(
        "{base}replicas = 3\nport = 8080\nnetwork = \"isolated\"\n"
    ))
    .unwrap();
    assert_eq!(
        isolated.processes[&ProcessType::web()].port,
        Some(8080),
        "isolated replicas may share a fixed port: each has its own network"
    );
    fails(
        &format!("{base}network = true\n"),
        3,
        Some("process.web.network"),
        "invalid type",
    );
}

const ROUTE: &str = "[process.web]\ncommand = \"x\"\n[route]\n";

#[test]
fn route_options_parse() {
    let m = parse(&format!(
        "{ROUTE}hosts = [\"shop.test\"]\npaths = [\"/api\", \"/admin/v2\"]\nbalance = \"round-robin\"\n\
         timeouts = {{ connect = \"500ms\", response = \"30s\", idle = \"2m\" }}\nmax_body = \"10MB\"\n"
    ))
    .unwrap();
    let r = &m.route;
    assert_eq!(r.paths, ["/api", "/admin/v2"]);
    assert_eq!(r.balance, crate::route_options::Balance::RoundRobin);
    assert_eq!(r.connect_timeout_ms, Some(500));
    assert_eq!(r.response_timeout_ms, Some(30_000));
    assert_eq!(r.idle_timeout_ms, Some(120_000));
    assert_eq!(r.max_body, Some(10_000_000));
    let plain = parse(&format!("{ROUTE}hosts = [\"a.test\"]\n")).unwrap();
    assert_eq!(
        plain.route,
        Default::default(),
        "defaults: every path, router defaults"
    );
}

#[test]
fn route_options_errors_are_located() {
    fails(
        &format!("{ROUTE}paths = [\"/ok\", \"api\"]\n"),
        4,
        Some("route.paths"),
        "must start with '/'",
    );
    fails(
        &format!("{ROUTE}paths = [\"/api/\"]\n"),
        4,
        Some("route.paths"),
        "trailing '/'",
    );
    fails(
        &format!("{ROUTE}paths = [\"/a\", \"/a\"]\n"),
        4,
        Some("route.paths"),
        "listed twice",
    );
    fails(
        &format!("{ROUTE}paths = []\n"),
        4,
        Some("route.paths"),
        "empty",
    );
    fails(
        &format!("{ROUTE}hosts = []\nbalance = \"random\"\n"),
        5,
        Some("route.balance"),
        "round-robin",
    );
    fails(
        &format!("{ROUTE}timeouts = {{ connect = \"2 parsecs\" }}\n"),
        4,
        Some("route.timeouts.connect"),
        "invalid duration",
    );
    fails(
        &format!("{ROUTE}\ntimeouts = {{ idle = \"0s\" }}\n"),
        5,
        Some("route.timeouts.idle"),
        "greater than zero",
    );
    fails(
        &format!("{ROUTE}timeouts = {{ read = \"1s\" }}\n"),
        4,
        Some("route.timeouts.read"),
        "unknown field",
    );
    fails(
        &format!("{ROUTE}max_body = \"lots\"\n"),
        4,
        Some("route.max_body"),
        "10MB",
    );
}
