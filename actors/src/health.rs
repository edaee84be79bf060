//! Liveness and readiness, as `GET /health` and `GET /ready` answer them.
//!
//! Ready means this node can serve what it is for: every PBX whose AMI link it holds is up
//! and its call model resynced, the call records (when on) are being written, and no
//! supervisor gave up; on a cluster edge, every context partition has caught up with its
//! stream (until then its logins are answered `busy`). A PBX whose link another node holds
//! (cluster mode) is not this node's to check.

use std::collections::BTreeMap;
use std::time::Instant;

use serde_json::{json, Value};

use crate::partition::Partitions;
use crate::pbx::Pbxes;
use crate::records::Records;
use crate::settings::human_duration;
use crate::supervisor::{ChildState, Report};

#[derive(Clone)]
pub struct Health {
    pub started: Instant,
    pub pbxes: Pbxes,
    pub report: Report,
    /// None when call records are off.
    pub records: Option<Records>,
    /// The partitions whose catching up counts (a cluster edge's).
    pub partitions: Option<Partitions>,
}

impl Health {
    /// Liveness: ctid answers.
    pub fn live(&self) -> Value {
        json!({
            "status": "ok",
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_seconds": self.started.elapsed().as_secs(),
        })
    }

    /// Readiness: whether ready, and the details with the reasons it is not.
    pub fn ready(&self) -> (bool, Value) {
        let mut reasons = Vec::new();
        let mut pbxes = BTreeMap::new();
        for pbx in self.pbxes.iter() {
            let state = match (pbx.router.get(), &pbx.remote) {
                (None, Some(_)) => "elsewhere".to_owned(),
                _ => {
                    let link = pbx.stats.snapshot();
                    match (&link.state, link.synced) {
                        (crate::ami::LinkState::Up, true) => "up".to_owned(),
                        (crate::ami::LinkState::Up, false) => {
                            reasons.push(format!("PBX {}: call model not resynced yet", pbx.name));
                            "syncing".to_owned()
                        }
                        (state, _) => {
                            reasons.push(format!("PBX {}: AMI link {state}", pbx.name));
                            state.to_string()
                        }
                    }
                }
            };
            pbxes.insert(pbx.name.to_string(), state);
        }
        let store = match &self.records {
            None => "off".to_owned(),
            Some(r) => match r.trouble() {
                None => "ok".to_owned(),
                Some(d) => {
                    let why = format!("late or failing for {}", human_duration(d));
                    reasons.push(format!("call records: {why}"));
                    why
                }
            },
        };
        let given_up: Vec<String> = self
            .report
            .snapshot()
            .into_iter()
            .filter(|(_, s)| s.state == ChildState::GivenUp)
            .map(|(path, _)| path)
            .collect();
        for path in &given_up {
            reasons.push(format!("{path} gave up (past its restart intensity)"));
        }
        let catching_up = self
            .partitions
            .as_ref()
            .map(Partitions::catching_up)
            .unwrap_or_default();
        for key in &catching_up {
            reasons.push(format!("partition {key}: catching up with its stream"));
        }
        let ready = reasons.is_empty();
        let details = json!({
            "ready": ready,
            "pbxes": pbxes,
            "store": store,
            "given_up": given_up,
            "catching_up": catching_up,
            "reasons": reasons,
        });
        (ready, details)
    }
}
