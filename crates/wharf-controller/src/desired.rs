//! Desired state for `plan()`: app records and releases, plus the canary window read
//! from the router's counters.

use crate::Inner;
use std::collections::HashMap;
use wharf_core::plan::{AppDesired, ProcessDesired, Window};
use wharf_types::release::UnixMillis;
use wharf_types::route::ReleaseStats;
use wharf_types::{AppName, AppRecord};

/// Router counters at the start of a canary step: (canary, baseline).
pub(crate) type Baselines = HashMap<(AppName, UnixMillis), (ReleaseStats, ReleaseStats)>;

impl Inner {
    /// Desired state of every app, from the mirrored records and releases.
    pub(crate) fn desired(&self) -> Vec<AppDesired> {
        let apps: Vec<AppRecord> = match self.apps.lock() {
            Ok(a) => a.values().cloned().collect(),
            Err(_) => return Vec::new(),
        };
        apps.iter().map(|app| self.desired_app(app)).collect()
    }

    fn desired_app(&self, app: &AppRecord) -> AppDesired {
        let release = app.target.and_then(|v| self.release(&app.name, v));
        let processes = release
            .as_ref()
            .map(|r| {
                r.processes
                    .iter()
                    .map(|(p, spec)| {
                        (
                            p.clone(),
                            ProcessDesired {
                                count: app.desired(p, spec),
                                deploy: spec.deploy.clone(),
                            },
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        AppDesired {
            app: app.name.clone(),
            release: release.map(|r| r.version),
            processes,
            rollout: app.rollout.clone(),
            warm: app.warm.clone(),
            window: self.canary_window(app),
        }
    }

    /// What the router saw of the canary and its baseline since the current step began.
    /// The counters at the step's start are taken the first time the step is seen (after
    /// a server restart, that is now: the window starts over).
    fn canary_window(&self, app: &AppRecord) -> Option<Window> {
        let ro = app.rollout.as_ref()?;
        let step = ro.canary.as_ref()?;
        let from = ro.from?;
        let now = self.routes.stats(app.name.as_str());
        let of = |release: u32| {
            now.iter()
                .find(|s| s.release == release)
                .cloned()
                .unwrap_or(ReleaseStats {
                    release,
                    ..ReleaseStats::default()
                })
        };
        let (canary, baseline) = (of(ro.release), of(from));
        let mut baselines = self.baselines.lock().ok()?;
        baselines.retain(|(a, _), _| a != &app.name || app.rollout.is_some());
        let start = baselines
            .entry((app.name.clone(), step.step_started_at))
            .or_insert_with(|| (canary.clone(), baseline.clone()));
        Some(Window {
            canary: canary.since(&start.0),
            baseline: Some(baseline.since(&start.1)),
        })
    }
}
