//! Validated names: an app name is a DNS label, a process type a short identifier.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} {name:?}: {reason}")]
pub struct NameError {
    pub kind: &'static str,
    pub name: String,
    pub reason: &'static str,
}

fn check_label(kind: &'static str, s: &str, allow_underscore: bool) -> Result<(), NameError> {
    let err = |reason| {
        Err(NameError {
            kind,
            name: s.to_string(),
            reason,
        })
    };
    if s.is_empty() {
        return err("must not be empty");
    }
    if s.len() > 63 {
        return err("must be at most 63 characters");
    }
    if !s.as_bytes()[0].is_ascii_lowercase() {
        return err("must start with a lowercase letter");
    }
    if s.ends_with('-') {
        return err("must not end with '-'");
    }
    let ok = |c: char| {
        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || (allow_underscore && c == '_')
    };
    if !s.chars().all(ok) {
        return err(if allow_underscore {
            "use only lowercase letters, digits, '-' and '_'"
        } else {
            "use only lowercase letters, digits and '-' (a DNS label)"
        });
    }
    Ok(())
}

/// An application name: a lowercase DNS label (`[a-z][a-z0-9-]{0,62}`, no trailing `-`),
/// so that `NAME.localhost` is a valid host.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AppName(String);

impl AppName {
    pub fn new(s: impl Into<String>) -> Result<Self, NameError> {
        let s = s.into();
        check_label("app name", &s, false)?;
        Ok(Self(s))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for AppName {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, NameError> {
        Self::new(s)
    }
}
impl From<AppName> for String {
    fn from(n: AppName) -> String {
        n.0
    }
}
impl fmt::Display for AppName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A process type (`web`, `worker`, ...). `web` is the one that receives HTTP.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ProcessType(String);

impl ProcessType {
    pub const WEB: &'static str = "web";
    pub fn new(s: impl Into<String>) -> Result<Self, NameError> {
        let s = s.into();
        check_label("process type", &s, true)?;
        Ok(Self(s))
    }
    pub fn web() -> Self {
        Self(Self::WEB.to_string())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    pub fn is_web(&self) -> bool {
        self.0 == Self::WEB
    }
}

impl TryFrom<String> for ProcessType {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, NameError> {
        Self::new(s)
    }
}
impl From<ProcessType> for String {
    fn from(n: ProcessType) -> String {
        n.0
    }
}
impl fmt::Display for ProcessType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_names() {
        for ok in ["a", "sample-app", "app2", &"a".repeat(63)] {
            assert!(AppName::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Sample",
            "1app",
            "app-",
            "a_b",
            "a.b",
            &"a".repeat(64),
            "-a",
        ] {
            assert!(AppName::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn process_types() {
        assert!(ProcessType::new("web").unwrap().is_web());
        assert!(ProcessType::new("release_task").is_ok());
        assert!(ProcessType::new("Web").is_err());
        let e = ProcessType::new("we b").unwrap_err();
        assert!(e.to_string().contains("process type"), "{e}");
    }
}
