//! Events the controller broadcasts: what a deploy shows while it waits.

use wharf_types::AppName;

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A step worth telling the user about.
    Progress { app: AppName, message: String },
    /// A rollout finished.
    RolloutSucceeded { app: AppName, release: u32 },
    /// A newer rollout replaced this one before it finished.
    RolloutSuperseded { app: AppName, release: u32, by: u32 },
    RolloutFailed {
        app: AppName,
        release: u32,
        reason: String,
        replica: Option<String>,
        logs: Vec<String>,
    },
}

impl Event {
    pub fn app(&self) -> &AppName {
        match self {
            Event::Progress { app, .. }
            | Event::RolloutSucceeded { app, .. }
            | Event::RolloutSuperseded { app, .. }
            | Event::RolloutFailed { app, .. } => app,
        }
    }
}
