//! wharf-types: the vocabulary every other crate speaks.
//!
//! Names (apps, process types), durations and memory sizes, the `wharf.toml` manifest and
//! its `Procfile` shorthand, the immutable release record, and the data transfer objects
//! the API and CLI exchange. Pure data and parsing: serde only, no I/O, no clocks.
//!
//! Invariant: a value of a type from this crate is valid once constructed (an `AppName` is
//! a DNS label, a `ProcessSpec` has a command, ...); validation happens at the edges.

pub mod access;
pub mod api;
pub mod manifest;
pub mod name;
pub mod quantity;
pub mod release;
pub mod route;
pub mod route_options;
pub mod secret;
pub mod spec;

pub use manifest::{Manifest, ManifestError};
pub use name::{AppName, NameError, ProcessType};
pub use release::{AppRecord, Release};
pub use spec::{Amount, Check, DeploySpec, Network, Probe, ProcessSpec, Strategy};
