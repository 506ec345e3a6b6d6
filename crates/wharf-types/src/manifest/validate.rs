//! Second pass: raw manifest -> validated [`Manifest`], each error located by field path.

use super::error::Locator;
use super::raw::{EnvValue, RawAmount, RawCanary, RawDeploy, RawManifest, RawProbe, RawProcess};
use super::{Manifest, ManifestError};
use crate::quantity::{parse_duration, parse_memory};
use crate::spec::{
    Amount, CanarySpec, Check, DeploySpec, Probe, ProcessSpec, DEFAULT_DRAIN_TIMEOUT,
    DEFAULT_STOP_TIMEOUT,
};
use crate::{AppName, ProcessType};
use std::collections::BTreeMap;
use std::time::Duration;

/// Upper bound on replicas of one process type on one machine.
pub const MAX_REPLICAS: u32 = 256;

type Result<T> = std::result::Result<T, ManifestError>;

pub(crate) fn validate(
    mut raw: RawManifest,
    loc: &Locator<'_>,
    default_app: Option<&str>,
) -> Result<Manifest> {
    let app = match (&raw.app, default_app) {
        (Some(name), _) => AppName::new(name.clone()).map_err(|e| loc.at(&["app"], e.to_string()))?,
        (None, Some(dir)) => AppName::new(dir).map_err(|e| {
            loc.at(&[], format!("{e} (taken from the directory name); set `app = \"...\"` in the manifest or pass --app"))
        })?,
        (None, None) => return Err(loc.at(&[], "no app name; set `app = \"...\"` in the manifest or pass --app")),
    };
    let build = match raw.build {
        Some(b) => match b.command {
            Some(c) if !c.trim().is_empty() => Some(c),
            _ => return Err(loc.at(&["build", "command"], "missing or empty build command")),
        },
        None => None,
    };
    let mut env = BTreeMap::new();
    for (key, value) in raw.env {
        if !valid_env_name(&key) {
            return Err(loc.at(
                &["env", &key],
                "invalid variable name; use letters, digits and '_', not starting with a digit",
            ));
        }
        if key == "PORT" {
            return Err(loc.at(
                &["env", &key],
                "PORT is assigned by wharf; use `port = N` in the process table to fix it",
            ));
        }
        let v = match value {
            EnvValue::String(s) => s,
            EnvValue::Integer(i) => i.to_string(),
            EnvValue::Float(f) => f.to_string(),
            EnvValue::Bool(b) => b.to_string(),
        };
        env.insert(key, v);
    }
    let mut processes = BTreeMap::new();
    let mut ports: BTreeMap<u16, String> = BTreeMap::new();
    for (name, rp) in raw.process {
        let ptype = ProcessType::new(name.clone())
            .map_err(|e| loc.at(&["process", &name], e.to_string()))?;
        let spec = process(&ptype, rp, loc)?;
        if let Some(port) = spec.port {
            if let Some(other) = ports.insert(port, name.clone()) {
                return Err(loc.at(
                    &["process", &name, "port"],
                    format!("port {port} is already used by process `{other}`; each process needs its own port"),
                ));
            }
        }
        processes.insert(ptype, spec);
    }
    let tls = raw
        .route
        .as_mut()
        .map(|r| super::route_tls::validate(r, loc));
    let tls = tls.transpose()?.unwrap_or_default();
    let route = match &raw.route {
        Some(r) => super::route::validate(r, loc)?,
        None => Default::default(),
    };
    let hosts = match raw.route {
        Some(r) => {
            for h in &r.hosts {
                if !valid_host(h) {
                    return Err(loc.at(&["route", "hosts"], format!("invalid host {h:?}; use a lowercase DNS name, optionally starting with \"*.\"")));
                }
            }
            r.hosts
        }
        None => Vec::new(),
    };
    let (secrets_as_files, rotate) = match raw.secrets {
        Some(sec) => super::secrets::validate(sec, loc)?,
        None => (false, BTreeMap::new()),
    };
    Ok(Manifest {
        app,
        build,
        env,
        processes,
        hosts,
        tls,
        rotate,
        secrets_as_files,
        route,
    })
}

fn process(ptype: &ProcessType, rp: RawProcess, loc: &Locator<'_>) -> Result<ProcessSpec> {
    let n = ptype.as_str();
    let at = |field: &str, msg: String| loc.at(&["process", n, field], msg);
    let command = match rp.command {
        Some(c) if !c.trim().is_empty() => c,
        Some(_) => return Err(at("command", "command is empty".into())),
        None => {
            return Err(loc.at(
                &["process", n],
                "missing `command`; every process needs one, e.g. command = \"node app.js\""
                    .to_string(),
            ))
        }
    };
    let mut spec = ProcessSpec::from_command(ptype, command);
    if let Some(r) = rp.replicas {
        if r > MAX_REPLICAS {
            return Err(at(
                "replicas",
                format!("{r} replicas is more than the limit of {MAX_REPLICAS}"),
            ));
        }
        spec.replicas = r;
    }
    if let Some(cpu) = rp.cpu {
        if cpu == 0 {
            return Err(at(
                "cpu",
                "cpu units must be at least 1 (1024 = one core)".into(),
            ));
        }
        spec.cpu = Some(cpu);
    }
    if let Some(cores) = rp.cpu_limit {
        spec.cpu_limit = Some(cpu_limit(cores.value()).map_err(|e| at("cpu_limit", e))?);
    }
    if let Some(m) = rp.memory {
        spec.memory = Some(parse_memory(&m).map_err(|e| at("memory", e))?);
    }
    if let Some(net) = rp.network {
        spec.network = net.parse().map_err(|e| at("network", e))?;
    }
    if let Some(port) = rp.port {
        if port == 0 {
            return Err(at("port", "port must be between 1 and 65535".into()));
        }
        // Each isolated replica has its own network, so they may all use one port.
        if spec.replicas > 1 && spec.network == crate::Network::Host {
            return Err(at("port", format!("a fixed port allows one replica on the host network, but replicas = {}; remove `port` to let wharf assign $PORT, or give each replica its own network with network = \"isolated\"", spec.replicas)));
        }
        spec.port = Some(port);
    }
    if let Some(image) = rp.image {
        let rest = image.strip_prefix("oci:").unwrap_or_default();
        if rest.is_empty() {
            return Err(at(
                "image",
                format!("{image:?} is not an image wharf can run; give an OCI image layout directory or its tar: image = \"oci:PATH\" or \"oci:PATH:TAG\" (`skopeo copy docker://IMAGE oci:PATH:TAG` makes one)"),
            ));
        }
        spec.image = Some(crate::spec::Image::new(image));
    }
    if let Some(p) = rp.readiness {
        spec.readiness = Some(probe(p, &["process", n, "readiness"], loc)?);
    }
    if let Some(p) = rp.liveness {
        spec.liveness = Some(probe(p, &["process", n, "liveness"], loc)?);
    }
    if let Some(p) = rp.startup {
        spec.startup = Some(probe(p, &["process", n, "startup"], loc)?);
    }
    if let Some(d) = rp.deploy {
        spec.deploy = deploy(d, n, loc)?;
    }
    spec.stop_timeout = positive(
        rp.stop_timeout,
        DEFAULT_STOP_TIMEOUT,
        &["process", n, "stop_timeout"],
        loc,
    )?;
    spec.drain_timeout = positive(
        rp.drain_timeout,
        DEFAULT_DRAIN_TIMEOUT,
        &["process", n, "drain_timeout"],
        loc,
    )?;
    Ok(spec)
}

/// Smallest and largest hard CPU limits, in millicores (the kernel's smallest quota is
/// 1 ms per 100 ms period).
pub const CPU_LIMIT_MILLICORES: std::ops::RangeInclusive<u32> = 10..=1_024_000;

/// `cpu_limit` in cores (`0.5`) to millicores, rounded to the nearest.
fn cpu_limit(cores: f64) -> std::result::Result<u32, String> {
    let millis = (cores * 1000.0).round();
    let (lo, hi) = (*CPU_LIMIT_MILLICORES.start(), *CPU_LIMIT_MILLICORES.end());
    if !cores.is_finite() || millis < f64::from(lo) || millis > f64::from(hi) {
        return Err(format!(
            "cpu_limit is in cores, between {} and {} (e.g. 0.5 for half a core), not {cores}",
            f64::from(lo) / 1000.0,
            hi / 1000
        ));
    }
    // In range, so the conversion is exact.
    Ok(millis as u32)
}

fn positive(
    v: Option<String>,
    default: Duration,
    path: &[&str],
    loc: &Locator<'_>,
) -> Result<Duration> {
    let Some(s) = v else { return Ok(default) };
    let d = parse_duration(&s).map_err(|e| loc.at(path, e))?;
    if d.is_zero() {
        return Err(loc.at(path, "duration must be greater than zero"));
    }
    Ok(d)
}

fn probe(p: RawProbe, path: &[&str], loc: &Locator<'_>) -> Result<Probe> {
    fn join<'a>(path: &[&'a str], f: &'a str) -> Vec<&'a str> {
        let mut v = path.to_vec();
        v.push(f);
        v
    }
    let field = |f: &'static str| join(path, f);
    let mut checks = Vec::new();
    if let Some(path_) = p.http {
        if !path_.starts_with('/') {
            return Err(loc.at(
                &field("http"),
                format!("http path {path_:?} must start with '/'"),
            ));
        }
        checks.push(Check::Http {
            path: path_,
            status: p.status,
        });
    } else if p.status.is_some() {
        return Err(loc.at(&field("status"), "`status` only applies to an http check"));
    }
    match p.tcp {
        Some(true) => checks.push(Check::Tcp),
        Some(false) => {
            return Err(loc.at(
                &field("tcp"),
                "`tcp = false` is not a check; remove it or use http/exec",
            ))
        }
        None => {}
    }
    if let Some(cmd) = p.exec {
        if cmd.trim().is_empty() {
            return Err(loc.at(&field("exec"), "exec command is empty"));
        }
        checks.push(Check::Exec { command: cmd });
    }
    if checks.len() != 1 {
        return Err(loc.at(
            path,
            "a probe needs exactly one of `http = \"/path\"`, `tcp = true` or `exec = \"cmd\"`",
        ));
    }
    let mut probe = Probe::new(checks.remove(0));
    probe.interval = positive(p.interval, probe.interval, &field("interval"), loc)?;
    probe.timeout = positive(p.timeout, probe.timeout, &field("timeout"), loc)?;
    for (v, slot, name) in [
        (
            p.failure_threshold,
            &mut probe.failure_threshold,
            "failure_threshold",
        ),
        (
            p.success_threshold,
            &mut probe.success_threshold,
            "success_threshold",
        ),
    ] {
        if let Some(v) = v {
            if v == 0 {
                return Err(loc.at(&field(name), "threshold must be at least 1"));
            }
            *slot = v;
        }
    }
    Ok(probe)
}

fn deploy(d: RawDeploy, n: &str, loc: &Locator<'_>) -> Result<DeploySpec> {
    let path = |f: &'static str| ["process", n, "deploy", f];
    let mut spec = DeploySpec::default();
    if let Some(s) = d.strategy {
        spec.strategy = s
            .parse()
            .map_err(|e: String| loc.at(&path("strategy"), e))?;
    }
    let amount = |a: RawAmount, f: &'static str| match a {
        RawAmount::Count(c) => Ok(Amount::Count(c)),
        RawAmount::Text(t) => Amount::parse(&t).map_err(|e| loc.at(&path(f), e)),
    };
    if let Some(a) = d.max_surge {
        spec.max_surge = amount(a, "max_surge")?;
    }
    if let Some(a) = d.max_unavailable {
        spec.max_unavailable = amount(a, "max_unavailable")?;
    }
    if spec.max_surge.resolve(100, true) == 0 && spec.max_unavailable.resolve(100, false) == 0 {
        return Err(loc.at(
            &path("max_surge"),
            "max_surge and max_unavailable cannot both be 0: the rollout could never progress",
        ));
    }
    spec.timeout = positive(d.timeout, spec.timeout, &path("timeout"), loc)?;
    spec.keep_previous = positive(
        d.keep_previous,
        spec.keep_previous,
        &path("keep_previous"),
        loc,
    )?;
    if let Some(c) = d.canary {
        spec.canary = canary(c, n, loc)?;
    }
    Ok(spec)
}

/// An environment variable name: letters, digits and '_', not starting with a digit.
pub fn canary(c: RawCanary, n: &str, loc: &Locator<'_>) -> Result<CanarySpec> {
    let path = |f: &'static str| ["process", n, "deploy", "canary", f];
    let mut spec = CanarySpec::default();
    if let Some(steps) = c.steps {
        let increasing = steps.windows(2).all(|w| w[0] < w[1]);
        if steps.is_empty()
            || !increasing
            || steps.iter().any(|s| *s == 0 || *s > 100)
            || steps.last() != Some(&100)
        {
            return Err(loc.at(&path("steps"), "steps must be increasing percentages between 1 and 100 ending with 100, e.g. [10, 50, 100]"));
        }
        spec.steps = steps;
    }
    spec.interval = positive(c.interval, spec.interval, &path("interval"), loc)?;
    spec.max_p99 = positive(c.max_p99, spec.max_p99, &path("max_p99"), loc)?;
    if let Some(m) = c.min_requests {
        spec.min_requests = m;
    }
    if let Some(m) = c.max_failed_checks {
        if m == 0 {
            return Err(loc.at(&path("max_failed_checks"), "must be at least 1"));
        }
        spec.max_failed_checks = m;
    }
    for (v, slot, name, lo, hi) in [
        (
            c.min_success_rate,
            &mut spec.min_success_rate,
            "min_success_rate",
            0.0,
            100.0,
        ),
        (
            c.max_success_drop,
            &mut spec.max_success_drop,
            "max_success_drop",
            0.0,
            100.0,
        ),
        (
            c.max_p99_ratio,
            &mut spec.max_p99_ratio,
            "max_p99_ratio",
            1.0,
            1000.0,
        ),
    ] {
        if let Some(v) = v {
            let v = v.value();
            if !(lo..=hi).contains(&v) {
                return Err(loc.at(&path(name), format!("must be between {lo} and {hi}")));
            }
            *slot = v;
        }
    }
    Ok(spec)
}

/// An environment variable name: letters, digits and '_', not starting with a digit.
pub fn valid_env_name(k: &str) -> bool {
    let mut chars = k.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A lowercase DNS name, optionally with a leading `*.` wildcard.
pub fn valid_host(h: &str) -> bool {
    let name = h.strip_prefix("*.").unwrap_or(h);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        })
}
