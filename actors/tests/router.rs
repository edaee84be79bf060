//! The router and the partitions of contexts added while it runs.

use std::time::{Duration, Instant};

use actix::prelude::*;
use ctid_actors::ami::{AmiEvents, AmiItem, LinkStats};
use ctid_actors::directory::DirectoryHandle;
use ctid_actors::metrics::Metrics;
use ctid_actors::partition::{Partitions, ReplayLimits};
use ctid_actors::router::{Router, RouterConfig};
use ctid_actors::supervisor::{Intensity, Report, Root, Slot};
use ctid_proto::ami::AmiMessage;
use ctid_proto::directory::Directory;

fn newchannel(uid: &str) -> AmiItem {
    AmiItem::Event(AmiMessage::parse(&format!(
        "Event: Newchannel\r\nChannel: PJSIP/trunk-{uid}\r\nChannelState: 4\r\nCallerIDNum: 555\r\n\
         Context: from-b\r\nExten: 100\r\nUniqueid: {uid}\r\nLinkedid: {uid}\r\n"
    )))
}

fn batch(items: Vec<AmiItem>) -> AmiEvents {
    AmiEvents {
        pbx: "default".into(),
        received: Instant::now(),
        items,
    }
}

async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..500 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never: {what}");
}

/// A context the router sees before its partition exists (a directory loaded from a web
/// service at start-up, an edit): the events it misses count as a gap, and once the
/// partition is there it gets every live call, not nothing forever.
#[actix_rt::test]
async fn a_partition_added_after_its_first_events_gets_the_live_calls() {
    let dir = Directory::parse("[[contexts]]\nname = \"b\"\ndialplan = [\"from-b\"]\n").unwrap();
    let handle = DirectoryHandle::new(dir);
    let metrics = Metrics::default();
    let limits = ReplayLimits {
        events: 100,
        bytes: 1 << 20,
        stale_after: Duration::from_secs(2),
    };
    let partitions = Partitions::new(true, limits, handle.clone(), metrics.clone(), Vec::new());
    let router = Router::new(
        handle,
        partitions.clone(),
        RouterConfig {
            pbx: "default".into(),
            link: Slot::new(),
            link_stats: LinkStats::default(),
            resync_every: Duration::ZERO,
            socket_timeout: Duration::from_secs(1),
            store: None,
            commands: Default::default(),
            metrics: metrics.clone(),
            cluster: None,
        },
    )
    .start();

    router.send(batch(vec![newchannel("1.1")])).await.unwrap();
    assert_eq!(metrics.snapshot().gaps, 1, "the missed event is a gap");

    let _root = Root::start(
        "root",
        Intensity::default(),
        vec![partitions.spec("b")],
        Report::default(),
    );
    let slot = partitions.slot("b").unwrap();
    tokio::time::timeout(Duration::from_secs(5), slot.next_after(None))
        .await
        .unwrap();
    router.send(batch(vec![newchannel("1.2")])).await.unwrap();
    let core = partitions.core("b").unwrap();
    let ids = || {
        let mut ids: Vec<String> = core.lock().unwrap().calls().map(|c| c.id.clone()).collect();
        ids.sort();
        ids
    };
    eventually("both calls in the partition", || {
        ids() == ["default:1.1", "default:1.2"]
    })
    .await;
    assert_eq!(metrics.snapshot().gaps, 1);
}
