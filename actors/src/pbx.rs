//! Every PBX as the rest of ctid reaches it: its AMI link, its router (and call model), its
//! link's state and taps, and the FastAGI peers that are its own.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use ctid_proto::cidr::Cidr;

use crate::ami::{AmiLink, AmiTaps, LinkStats};
use crate::cluster::remote::Remote;
use crate::router::Router;
use crate::supervisor::Slot;

/// One PBX.
#[derive(Clone)]
pub struct Pbx {
    pub name: Arc<str>,
    /// `host:port` of its AMI.
    pub endpoint: String,
    pub link: Slot<AmiLink>,
    pub router: Slot<Router>,
    pub stats: LinkStats,
    pub taps: AmiTaps,
    pub fagi_from: Vec<Cidr>,
    /// Cluster mode: the way to the PBX's active ingest, when it is another node.
    pub remote: Option<Remote>,
}

/// Every PBX, by name.
#[derive(Clone, Default)]
pub struct Pbxes(Arc<BTreeMap<String, Pbx>>);

impl Pbxes {
    pub fn new(pbxes: impl IntoIterator<Item = Pbx>) -> Self {
        Pbxes(Arc::new(
            pbxes.into_iter().map(|p| (p.name.to_string(), p)).collect(),
        ))
    }

    pub fn get(&self, name: &str) -> Option<&Pbx> {
        self.0.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Pbx> {
        self.0.values()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The state of each PBX's link, by name (`up`, `connecting`, `down (why)`; in cluster
    /// mode, `elsewhere` when another node holds it).
    pub fn states(&self) -> BTreeMap<String, String> {
        self.iter()
            .map(|p| {
                let state = match (p.router.get(), &p.remote) {
                    (None, Some(_)) => "elsewhere".to_owned(),
                    _ => p.stats.snapshot().state.to_string(),
                };
                (p.name.to_string(), state)
            })
            .collect()
    }

    /// The PBX a FastAGI request is for: the one it names (`pbx=`), else the one whose
    /// `fagi_from` holds its source address, else the only one.
    pub fn for_agi(&self, named: Option<&str>, peer: IpAddr) -> Result<&Pbx, String> {
        if let Some(name) = named {
            return self
                .get(name)
                .ok_or_else(|| format!("pbx={name} is not a configured PBX"));
        }
        if let Some(pbx) = self
            .iter()
            .find(|p| p.fagi_from.iter().any(|c| c.contains(peer)))
        {
            return Ok(pbx);
        }
        match (self.0.len(), self.iter().next()) {
            (1, Some(only)) => Ok(only),
            _ => Err(format!(
                "no PBX for a request from {peer}: give pbx=<name> in the AGI URL, or list the address in pbx.<name>.fagi_from"
            )),
        }
    }
}
