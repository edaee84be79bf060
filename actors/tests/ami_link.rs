//! The AMI link actor against the simulated Asterisk: actions by ActionID, lists, timeouts,
//! events downstream, and what happens when downstream cannot keep up.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use ctid_actors::ami::{
    AmiError, AmiEvents, AmiLink, AmiRequest, AmiTaps, Completion, LinkChanged, LinkConfig,
    LinkState, LinkStats,
};
use ctid_actors::settings::{AmiAuth, AmiSettings, PbxSettings, Secret};
use ctid_actors::supervisor::Outlet;
use ctid_pbxsim::calls::{CallPlan, Tenant};
use ctid_pbxsim::{PbxSim, SimConfig};
use ctid_proto::ami::AmiPacket;

#[derive(Default)]
struct Seen {
    events: Vec<String>,
    states: Vec<LinkState>,
}

struct Collector(Arc<Mutex<Seen>>);

impl Actor for Collector {
    type Context = Context<Self>;
}

impl Handler<AmiEvents> for Collector {
    type Result = ();
    fn handle(&mut self, msg: AmiEvents, _: &mut Context<Self>) {
        let mut seen = self.0.lock().unwrap();
        seen.events.extend(
            msg.items
                .iter()
                .filter_map(|i| i.event())
                .map(|e| e.event().unwrap_or("").to_owned()),
        );
    }
}

impl Handler<LinkChanged> for Collector {
    type Result = ();
    fn handle(&mut self, msg: LinkChanged, _: &mut Context<Self>) {
        self.0.lock().unwrap().states.push(msg.state);
    }
}

fn settings(sim: &PbxSim) -> AmiSettings {
    AmiSettings {
        port: sim.addr().port(),
        username: "cti".into(),
        secret: Secret::new("ctipass"),
        auth: AmiAuth::Md5,
        reconnect_min: Duration::from_millis(100),
        reconnect_max: Duration::from_millis(500),
        ping_interval: Duration::ZERO,
        ..AmiSettings::default()
    }
}

fn link(
    sim: &PbxSim,
    socket: Duration,
    events: Outlet<AmiEvents>,
    states: Outlet<LinkChanged>,
) -> (Addr<AmiLink>, LinkStats) {
    let stats = LinkStats::default();
    let pbx = PbxSettings {
        ami: settings(sim),
        ..PbxSettings::default()
    };
    let cfg = LinkConfig::new(&pbx, socket).unwrap();
    (
        AmiLink::new(cfg, events, states, stats.clone(), AmiTaps::default()).start(),
        stats,
    )
}

async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never: {what}");
}

async fn up(stats: &LinkStats) {
    eventually("link up", || stats.snapshot().state == LinkState::Up).await;
}

#[actix_rt::test]
async fn actions_are_answered_by_action_id() {
    let sim = PbxSim::start(SimConfig::default()).await.unwrap();
    let (addr, stats) = link(&sim, Duration::from_secs(5), Outlet::none(), Outlet::none());
    up(&stats).await;

    let pong = addr
        .send(AmiRequest::new(AmiPacket::action("Ping")))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(pong.response.unwrap().get("Ping"), Some("Pong"));

    let unknown = addr
        .send(AmiRequest::new(AmiPacket::action("NoSuchAction")))
        .await
        .unwrap()
        .unwrap();
    assert!(unknown
        .outcome()
        .unwrap_err()
        .starts_with("Invalid/unknown command: NoSuchAction"));

    let injected = AmiPacket::action("Originate").field("Exten", "1002\r\nAction: Logoff");
    let refused = addr.send(AmiRequest::new(injected)).await.unwrap();
    assert!(matches!(refused, Err(AmiError::Invalid(_))), "{refused:?}");
    assert!(sim
        .actions()
        .iter()
        .all(|a| a.get("Action") != Some("Logoff")));

    // Every action ctid sent carried its own ActionID.
    let ids: Vec<_> = sim
        .actions()
        .iter()
        .map(|a| a.action_id().unwrap().to_owned())
        .collect();
    let unique: std::collections::HashSet<_> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "{ids:?}");
}

#[actix_rt::test]
async fn a_list_action_gathers_its_items_up_to_the_complete_event() {
    let sim = PbxSim::start(SimConfig::default()).await.unwrap();
    let plan = CallPlan {
        rate: 200.0,
        ring: Duration::from_secs(30),
        talk: Duration::from_secs(30),
        tenants: vec![Tenant::parse("internal:1001-1099").unwrap()],
        limit: Some(5),
        caller_up: false,
    };
    let calls = sim.run_calls(plan);
    let (addr, stats) = link(&sim, Duration::from_secs(5), Outlet::none(), Outlet::none());
    up(&stats).await;
    eventually("5 calls", || calls.started() == 5).await;

    let reply = addr
        .send(AmiRequest::list(AmiPacket::action("CoreShowChannels")))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reply.response.unwrap().event_list(), Some("start"));
    assert_eq!(reply.events.len(), 10, "two channels per call");
    assert!(reply
        .events
        .iter()
        .all(|e| e.event() == Some("CoreShowChannel")));
}

#[actix_rt::test]
async fn a_silent_asterisk_times_the_action_out_and_a_down_link_refuses_at_once() {
    let sim = PbxSim::start(SimConfig::default()).await.unwrap();
    let (addr, stats) = link(&sim, Duration::from_secs(5), Outlet::none(), Outlet::none());
    up(&stats).await;

    sim.set_muted(true);
    let mut ping = AmiRequest::new(AmiPacket::action("Ping"));
    ping.timeout = Some(Duration::from_millis(200));
    let late = addr.send(ping).await.unwrap();
    assert_eq!(
        late.unwrap_err(),
        AmiError::Timeout(Duration::from_millis(200))
    );

    let mut originate = AmiRequest::new(AmiPacket::action("Originate"));
    originate.completion = Completion::Event("OriginateResponse");
    let waiting = addr.send(originate);
    sim.drop_connections();
    let dropped = waiting.await.unwrap();
    assert!(
        matches!(dropped, Err(AmiError::Down(ref why)) if why == "closed by Asterisk"),
        "{dropped:?}"
    );

    let refused = addr
        .send(AmiRequest::new(AmiPacket::action("Ping")))
        .await
        .unwrap();
    assert!(matches!(refused, Err(AmiError::Down(_))), "{refused:?}");
}

#[actix_rt::test]
async fn events_go_downstream_in_order_and_the_state_is_published() {
    let sim = PbxSim::start(SimConfig::default()).await.unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let collector = Collector(seen.clone()).start();
    let (_addr, stats) = link(
        &sim,
        Duration::from_secs(5),
        Outlet::to(collector.clone().recipient()),
        Outlet::to(collector.recipient()),
    );
    up(&stats).await;
    let recording = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fixtures/ami/bridged_call.txt"
    ))
    .unwrap();
    let replayed = sim.replay(&recording);
    assert_eq!(replayed, 126);
    eventually("all events", || {
        seen.lock().unwrap().events.len() == replayed + 1
    })
    .await;
    let seen = seen.lock().unwrap();
    assert_eq!(seen.events[0], "FullyBooted");
    assert_eq!(seen.events[1], "Newchannel");
    assert_eq!(seen.events.iter().filter(|e| *e == "Hangup").count(), 4);
    assert_eq!(seen.states.last(), Some(&LinkState::Up));
    assert_eq!(stats.snapshot().events, 127);
}

#[actix_rt::test]
async fn a_consumer_a_whole_mailbox_behind_makes_the_link_resync_instead_of_buffering() {
    let sim = PbxSim::start(SimConfig::default()).await.unwrap();
    // A mailbox nobody reads: the consumer is stuck.
    let stuck: Context<Collector> = Context::new();
    let (_addr, stats) = link(
        &sim,
        Duration::from_secs(5),
        Outlet::to(stuck.address().recipient()),
        Outlet::none(),
    );
    up(&stats).await;
    let recording = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fixtures/ami/bridged_call.txt"
    ))
    .unwrap();
    for _ in 0..200 {
        sim.replay(&recording);
        tokio::time::sleep(Duration::from_millis(2)).await;
        if stats.snapshot().overflows > 0 {
            break;
        }
    }
    let status = stats.snapshot();
    assert!(status.overflows >= 1, "{status:?}");
    eventually("logged in again", || stats.snapshot().logins >= 2).await;
}
