//! The PBX part of the supervision tree. Each PBX gets its link and router on a thread of
//! their own, under their own supervisor, so that reading one Asterisk never waits behind
//! client work or another PBX. In cluster mode, that supervisor runs while this node holds
//! the PBX's lease.

use std::time::Duration;

use actix::prelude::*;
use ctid_actors::ami::{AmiLink, LinkConfig};
use ctid_actors::cluster::lease::{Holding, LeaseKeeper};
use ctid_actors::cluster::remote::Responder;
use ctid_actors::cluster::Cluster;
use ctid_actors::directory::DirectoryHandle;
use ctid_actors::metrics::Metrics;
use ctid_actors::partition::Partitions;
use ctid_actors::pbx::Pbxes;
use ctid_actors::router::{Router, RouterConfig};
use ctid_actors::settings::Settings;
use ctid_actors::store::Stores;
use ctid_actors::supervisor::{
    ChildSpec, Intensity, Report, Restart, Slot, StartChild, StopChild, Supervisor,
};
use log::warn;

/// What the PBXes' actors share with the rest of the tree.
pub(super) struct Wiring<'a> {
    pub settings: &'a Settings,
    pub pbxes: &'a Pbxes,
    pub directory: &'a DirectoryHandle,
    pub partitions: &'a Partitions,
    pub store: Option<&'a Stores>,
    pub metrics: &'a Metrics,
    pub report: &'a Report,
    pub cluster: Option<&'a Cluster>,
    /// Whether this node ingests at all (cluster roles).
    pub ingest: bool,
}

/// The threads of the PBXes this node may ingest, and their supervisors (in cluster mode,
/// the `ingest` supervisor that runs those whose lease is held, and the lease keepers).
pub(super) fn tree(w: Wiring, links: Vec<LinkConfig>) -> (Vec<Arbiter>, Vec<ChildSpec>) {
    let Wiring {
        settings,
        pbxes,
        directory: handle,
        partitions,
        store,
        metrics,
        report,
        cluster,
        ingest,
    } = w;
    let mut threads = Vec::new();
    let mut sups = Vec::new();
    let mut leases = Vec::new();
    let ingest_slot = Slot::<Supervisor>::new();
    let taken = |name: &str| {
        let only = &settings.cluster.pbxes;
        ingest && (only.is_empty() || only.iter().any(|p| p == name))
    };
    for (link, p) in links.into_iter().zip(&settings.pbxes) {
        let Some(pbx) = pbxes.get(&p.name).filter(|_| taken(&p.name)).cloned() else {
            continue;
        };
        let thread = Arbiter::new();
        let holding = Holding::default();
        let config = RouterConfig {
            pbx: pbx.name.clone(),
            link: pbx.link.clone(),
            link_stats: pbx.stats.clone(),
            resync_every: p.ami.resync_interval,
            socket_timeout: settings.timeouts.socket,
            store: store.cloned(),
            commands: settings.commands.clone(),
            metrics: metrics.clone(),
            cluster: cluster.cloned().map(|c| (c, holding.clone())),
        };
        let (dir, partitions) = (handle.clone(), partitions.clone());
        let router = ChildSpec::new("router", Restart::Permanent, pbx.router.clone(), {
            move |_| Router::new(dir.clone(), partitions.clone(), config.clone())
        })
        .on(thread.handle());
        let (stats, taps, router_slot) = (pbx.stats.clone(), pbx.taps.clone(), pbx.router.clone());
        let ami = ChildSpec::new("ami", Restart::Permanent, pbx.link.clone(), move |_| {
            AmiLink::new(
                link.clone(),
                router_slot.outlet(),
                router_slot.outlet(),
                stats.clone(),
                taps.clone(),
            )
        })
        .on(thread.handle());
        let mut children = vec![router, ami];
        if let Some(c) = cluster {
            let (c, name, handle) = (c.clone(), pbx.name.clone(), handle.clone());
            let (router, link) = (pbx.router.clone(), pbx.link.clone());
            let (socket, ring) = (
                settings.timeouts.socket,
                Duration::from_millis(settings.commands.originate_timeout_ms),
            );
            children.push(ChildSpec::new(
                "responder",
                Restart::Permanent,
                Slot::new(),
                move |_| {
                    let (router, link) = (router.clone(), link.clone());
                    Responder::new(c.clone(), &name, router, link, handle.clone(), socket, ring)
                },
            ));
        }
        threads.push(thread);
        let sup = ChildSpec::supervisor(
            format!("pbx-{}", pbx.name),
            Intensity::default(),
            children,
            report.clone(),
            Slot::new(),
        );
        match cluster {
            None => sups.push(sup),
            Some(c) => leases.push(lease_keeper(c, &pbx.name, holding, sup, &ingest_slot)),
        }
    }
    if cluster.is_some() {
        sups = vec![
            ChildSpec::supervisor(
                "ingest",
                Intensity::default(),
                Vec::new(),
                report.clone(),
                ingest_slot,
            ),
            ChildSpec::supervisor(
                "leases",
                Intensity::default(),
                leases,
                report.clone(),
                Slot::new(),
            ),
        ];
    }
    (threads, sups)
}

/// The keeper of a PBX's lease: while it holds it, the PBX's supervisor `sup` runs under
/// the `ingest` supervisor.
fn lease_keeper(
    cluster: &Cluster,
    pbx: &str,
    holding: Holding,
    sup: ChildSpec,
    ingest: &Slot<Supervisor>,
) -> ChildSpec {
    let (cluster, name, ingest) = (cluster.clone(), pbx.to_owned(), ingest.clone());
    ChildSpec::new(
        format!("lease-{pbx}"),
        Restart::Permanent,
        Slot::new(),
        move |_| {
            let (sup, ingest) = (sup.clone(), ingest.clone());
            let on_change = Box::new(move |held: bool| match ingest.get() {
                Some(ingest) if held => ingest.do_send(StartChild(sup.clone())),
                Some(ingest) => ingest.do_send(StopChild(sup.name().to_owned())),
                None => warn!("cluster: the ingest supervisor is not running"),
            });
            LeaseKeeper::new(cluster.clone(), &name, holding.clone(), on_change)
        },
    )
}
