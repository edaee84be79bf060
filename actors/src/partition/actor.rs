//! The actor of a partition: it applies events, directory changes and the cluster feed to
//! its core, and kicks the sessions that fell behind.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use bytes::Bytes;
use ctid_proto::cti::{timenow, ErrorCode, Reply};
use ctid_proto::directory::Directory;
use ctid_proto::lists::config_changes;
use log::info;

use super::state::lock;
use super::{
    scope, Kick, Member, PartitionCore, PartitionEvents, PbxStatus, Reconcile, SessionId, ALL,
};
use crate::cluster::feed::{self, Fed};
use crate::cluster::Cluster;
use crate::directory::DirectoryHandle;
use crate::metrics::Metrics;
use crate::supervisor::Shutdown;

pub struct Partition {
    pub(super) key: String,
    pub(super) core: Arc<Mutex<PartitionCore>>,
    pub(super) directory: DirectoryHandle,
    /// The directory version the sessions were last told about.
    pub(super) told: Arc<Directory>,
    pub(super) metrics: Metrics,
    /// Cluster mode: where its events come from, and how many it reads when it starts.
    pub(super) feed: Option<(Cluster, usize)>,
}

impl Partition {
    pub(super) fn kick(slow: Vec<Member>) {
        for member in slow {
            member.session.do_send(Kick(ErrorCode::SlowConsumer));
        }
    }

    /// Whether a user (by id) still belongs to this partition in `dir`.
    fn keeps(&self, dir: &Directory, user_id: u64) -> bool {
        dir.user(user_id)
            .is_some_and(|u| self.key == ALL || u.context() == Some(self.key.as_str()))
    }
}

impl Actor for Partition {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(4096);
        ctx.add_stream(self.directory.changes());
        self.follow(ctx);
        ctx.run_interval(BOARD_PERIOD, |act, _| {
            let slow = lock(&act.core).tick_board(&act.directory.get());
            Self::kick(slow);
        });
    }
}

/// How often wallboards are sent what changed: the page ticks waits between two.
const BOARD_PERIOD: Duration = Duration::from_secs(1);

/// How long a broken feed waits before it starts again.
const FEED_RETRY: Duration = Duration::from_secs(1);

impl Partition {
    /// Cluster mode: reads the context's stream from the event after the last one held.
    fn follow(&mut self, ctx: &mut Context<Self>) {
        let Some((cluster, keep)) = self.feed.clone() else {
            return;
        };
        let (after, ready) = {
            let core = lock(&self.core);
            (core.seq, core.ready)
        };
        let fed = feed::start(cluster, self.key.clone(), after, ready, keep);
        ctx.add_stream(futures_util::stream::unfold(fed, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        }));
    }
}

impl StreamHandler<Fed> for Partition {
    fn handle(&mut self, fed: Fed, _: &mut Context<Self>) {
        let mut core = lock(&self.core);
        let slow = match fed {
            Fed::Event { seq, known, event } => core.publish_at(seq, known, event),
            Fed::Seed(calls) => {
                core.seed(calls);
                Vec::new()
            }
            Fed::Ready => {
                info!(
                    "partition {}: caught up with its stream at event {}",
                    self.key, core.seq
                );
                core.set_ready();
                Vec::new()
            }
            Fed::Status { pbx, state } => {
                let line = Reply::new("pbx_status")
                    .with("pbx", pbx)
                    .with("state", state)
                    .encode(timenow());
                core.fan_out(&[line])
            }
        };
        drop(core);
        Self::kick(slow);
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        ctx.run_later(FEED_RETRY, |act, ctx| act.follow(ctx));
    }
}

impl StreamHandler<Arc<Directory>> for Partition {
    /// Tells the sessions what changed in the directory; those of users deleted or moved
    /// to another context are closed.
    fn handle(&mut self, new: Arc<Directory>, _: &mut Context<Self>) {
        let old = std::mem::replace(&mut self.told, new.clone());
        let mut core = lock(&self.core);
        let gone: Vec<SessionId> = core
            .members
            .iter()
            .filter(|(_, m)| !self.keeps(&new, m.user_id))
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            if let Some(member) = core.leave(id) {
                member.session.do_send(Kick(ErrorCode::UserChanged));
            }
        }
        let now = timenow();
        let lines: Vec<Bytes> = config_changes(&old, &new, scope(&self.key))
            .into_iter()
            .map(|r| r.encode(now))
            .collect();
        if lines.is_empty() {
            return;
        }
        let slow = core.fan_out(&lines);
        drop(core);
        Self::kick(slow);
    }

    fn finished(&mut self, _: &mut Context<Self>) {}
}

impl Handler<PartitionEvents> for Partition {
    type Result = ();

    fn handle(&mut self, msg: PartitionEvents, _: &mut Context<Self>) {
        let mut core = lock(&self.core);
        core.received = Some(msg.received);
        let slow = core.publish(msg.changes);
        let lag = msg.received.elapsed();
        core.lags.record(timenow(), lag.as_secs_f64() * 1000.0);
        drop(core);
        self.metrics.event_lag(lag);
        Self::kick(slow);
    }
}

impl Handler<Reconcile> for Partition {
    type Result = ();

    fn handle(&mut self, msg: Reconcile, _: &mut Context<Self>) {
        let slow = lock(&self.core).reconcile(&msg.live);
        Self::kick(slow);
    }
}

impl Handler<PbxStatus> for Partition {
    type Result = ();

    fn handle(&mut self, msg: PbxStatus, _: &mut Context<Self>) {
        let line = Reply::new("pbx_status")
            .with("pbx", msg.pbx.to_string())
            .with("state", msg.state)
            .encode(timenow());
        let slow = lock(&self.core).fan_out(&[line]);
        Self::kick(slow);
    }
}

impl Handler<Shutdown> for Partition {
    type Result = ();

    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
