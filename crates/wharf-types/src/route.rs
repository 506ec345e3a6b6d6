//! The route table the control plane hands to the router: plain data, versioned.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// A complete, immutable snapshot of where traffic may go.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteTable {
    pub version: u64,
    pub routes: Vec<Route>,
}

/// Hosts of one app and the ready replicas of its `web` process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub app: String,
    /// Exact host names (lowercase, no port) and `*.domain` wildcards.
    pub hosts: Vec<String>,
    pub backends: Vec<Backend>,
}

/// One ready replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backend {
    pub replica: String,
    pub release: u32,
    pub addr: SocketAddr,
}
