use super::*;
use crate::outbox::Budget;
use crate::outbox::Outbox;
use crate::partition::Kick;
use actix::prelude::*;
use serde_json::json;
use std::time::Duration;

struct Sink;
impl Actor for Sink {
    type Context = Context<Self>;
}
impl Handler<Kick> for Sink {
    type Result = ();
    fn handle(&mut self, _: Kick, _: &mut Context<Self>) {}
}

fn call(id: &str) -> Arc<Call> {
    let dir = Directory::default();
    let mut model = ctid_proto::calls::CallModel::new(ctid_proto::directory::DEFAULT_PBX);
    let ev = ctid_proto::ami::AmiMessage::parse(&format!(
        "Event: Newchannel\r\nChannel: PJSIP/x-1\r\nUniqueid: {id}\r\nLinkedid: {id}\r\n"
    ));
    Arc::new(model.apply(&ev, 1.0, &dir).remove(0).call)
}

fn member(outbox: &Arc<Outbox>) -> Member {
    Member {
        user_id: 1,
        availstate: "available".into(),
        outbox: outbox.clone(),
        session: Sink.start().recipient(),
    }
}

/// Replay bounds of `events` events, whose events go stale after an hour.
fn limits(events: usize) -> ReplayLimits {
    ReplayLimits {
        events,
        bytes: 1 << 20,
        stale_after: Duration::from_secs(3600),
    }
}

/// An outbox with room for what the tests send.
fn roomy_outbox() -> Arc<Outbox> {
    Outbox::new(Budget {
        max_bytes: 1 << 20,
        max_messages: 100,
    })
}

#[actix_rt::test]
async fn resume_replays_what_was_missed_then_lives_on() {
    let core = PartitionCore::new("default", limits(100));
    let mut c = lock(&core);
    c.publish(vec![Change::Call(
        EventKind::Offered,
        call("1.1"),
        timenow(),
    )]);
    c.publish(vec![
        Change::Call(EventKind::Offered, call("1.2"), timenow()),
        Change::Call(EventKind::Hungup, call("1.1"), timenow()),
    ]);
    assert_eq!(c.seq(), 3);
    let outbox = roomy_outbox();
    let seq = c
        .subscribe(Subscribe {
            session: 7,
            member: member(&outbox),
            resume_after: Some(1),
            ack: Box::new(|seq| Reply::new("resume").with("seq", seq).encode(0.0)),
        })
        .unwrap();
    assert_eq!(seq, 3);
    c.publish(vec![Change::Call(
        EventKind::Hungup,
        call("1.2"),
        timenow(),
    )]);
    let got = outbox.queued_json();
    let seqs: Vec<u64> = got
        .iter()
        .skip(1)
        .map(|v| v["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(got[0]["class"], "resume");
    assert_eq!(seqs, [2, 3, 4]);
    assert_eq!(got[1]["call"]["contexts"], serde_json::json!(["default"]));
}

/// An event older than `stale_after` goes out stale and is counted, once some session
/// gets it; a resume replays it as replayed, not stale.
#[actix_rt::test]
async fn an_old_event_goes_out_stale_and_is_replayed_fresh() {
    let metrics = Metrics::default();
    let limits = ReplayLimits {
        events: 100,
        bytes: 1 << 20,
        stale_after: Duration::from_secs(2),
    };
    let core = PartitionCore::with_readiness(
        "default",
        limits,
        true,
        metrics.clone(),
        BoardSettings::default(),
    );
    let mut c = lock(&core);
    let old = timenow() - 60.0;
    c.publish(vec![Change::Call(EventKind::Offered, call("5.1"), old)]);
    assert_eq!(metrics.stale_events(), 0, "sent to nobody");
    let outbox = roomy_outbox();
    let sub = |after| Subscribe {
        session: 1,
        member: member(&outbox),
        resume_after: after,
        ack: Box::new(|_| Bytes::from_static(b"{}\n")),
    };
    c.subscribe(sub(None)).unwrap();
    c.publish(vec![
        Change::Call(EventKind::Updated, call("5.1"), old),
        Change::Left("default:5.1".into(), timenow()),
    ]);
    assert_eq!(metrics.stale_events(), 1);
    let live = outbox.queued_json();
    assert_eq!(
        (&live[1]["stale"], &live[2]["stale"]),
        (&json!(true), &json!(false))
    );
    assert_eq!(
        live[1]["event_time"],
        ctid_proto::rfc3339::format_millis(old)
    );
    assert!(live[1].get("replayed").is_none());

    c.leave(1);
    let again = roomy_outbox();
    let resume = Subscribe {
        member: member(&again),
        ..sub(Some(0))
    };
    c.subscribe(resume).unwrap();
    let replayed = again.queued_json();
    assert_eq!(replayed.len(), 4, "the ack, then three events");
    for e in &replayed[1..] {
        assert_eq!(
            (&e["replayed"], &e["stale"]),
            (&json!(true), &json!(false)),
            "{e}"
        );
    }
    assert_eq!(replayed[3]["event"], "left");
}

/// A reconcile ended the call while its record was being written; the `hungup` that
/// follows the write must not end it a second time.
#[actix_rt::test]
async fn a_call_ended_by_a_reconcile_ends_once() {
    let core = PartitionCore::new("default", limits(100));
    let mut c = lock(&core);
    c.publish(vec![Change::Call(
        EventKind::Offered,
        call("3.1"),
        timenow(),
    )]);
    c.reconcile(&HashSet::new());
    c.publish(vec![Change::Call(
        EventKind::Hungup,
        call("3.1"),
        timenow(),
    )]);
    assert_eq!(c.seq(), 2, "offered, then one hungup");
}

#[actix_rt::test]
async fn events_that_send_nothing_leave_no_read_time_for_the_next_write() {
    let core = PartitionCore::new("default", limits(100));
    let outbox = roomy_outbox();
    let mut c = lock(&core);
    c.join(1, member(&outbox));
    // A hungup of a call never seen here encodes to nothing.
    c.received = Some(Instant::now());
    c.publish(vec![Change::Call(
        EventKind::Hungup,
        call("9.9"),
        timenow(),
    )]);
    assert_eq!(outbox.oldest(), None);
}

fn wire(epoch: u64, kind: EventKind, id: &str) -> Option<WireEvent> {
    Some(WireEvent {
        epoch,
        pbx: "default".into(),
        at: Some(timenow()),
        read: Some(timenow()),
        change: WireChange::Call {
            kind,
            call: Box::new(ctid_proto::wire::WireCall::from(&*call(id))),
        },
    })
}

/// Cluster mode: events of an ingest whose lease was taken over are dropped, and their
/// numbers are not reused.
#[actix_rt::test]
async fn a_stale_epoch_is_dropped_and_its_seq_left_unused() {
    let core = PartitionCore::with_readiness(
        "default",
        limits(100),
        false,
        Metrics::default(),
        BoardSettings::default(),
    );
    let mut c = lock(&core);
    c.publish_at(1, 3, wire(5, EventKind::Offered, "1.1"));
    c.publish_at(2, 3, wire(4, EventKind::Offered, "1.2"));
    c.publish_at(3, 3, wire(6, EventKind::Updated, "1.1"));
    c.publish_at(3, 3, wire(6, EventKind::Hungup, "1.1"));
    assert_eq!(c.seq(), 3);
    let ids: Vec<&str> = c.calls().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["default:1.1"], "1.2 was dropped, a repeated seq too");
    let kept: Vec<u64> = c.replay.iter().map(|(s, _)| *s).collect();
    assert_eq!(kept, [1, 3]);
}

#[actix_rt::test]
async fn an_absurd_read_time_from_another_node_is_published_without_a_lag() {
    let core = PartitionCore::new("default", limits(100));
    let mut c = lock(&core);
    for (seq, read) in [(1, -1e300), (2, 1e300), (3, f64::MAX)] {
        let mut event = wire(1, EventKind::Updated, "1.1");
        if let Some(e) = event.as_mut() {
            e.read = Some(read);
        }
        c.publish_at(seq, seq, event);
    }
    assert_eq!(c.seq(), 3);
    let p99 = c.lags.p99(timenow()).unwrap_or(0.0);
    assert!(
        p99 < 1.0,
        "{p99} ms: a time ahead counts as no lag, one too old not at all"
    );
}

#[actix_rt::test]
async fn a_resume_older_than_the_buffer_needs_a_resync() {
    let core = PartitionCore::new("default", limits(2));
    let mut c = lock(&core);
    for i in 0..5 {
        c.publish(vec![Change::Call(
            EventKind::Offered,
            call(&format!("2.{i}")),
            timenow(),
        )]);
    }
    let outbox = roomy_outbox();
    let sub = |after| Subscribe {
        session: 1,
        member: member(&outbox),
        resume_after: Some(after),
        ack: Box::new(|_| Bytes::from_static(b"{}\n")),
    };
    assert_eq!(c.subscribe(sub(2)), Err(ErrorCode::ResyncRequired));
    assert_eq!(c.subscribe(sub(9)), Err(ErrorCode::ResyncRequired));
    assert_eq!(c.subscribe(sub(3)), Ok(5));
}

/// A wallboard watcher gets the board at once, then only when it changed: a queued
/// call, and nothing while nothing happens.
#[actix_rt::test]
async fn a_wallboard_goes_to_its_watchers_only_and_only_when_it_changed() {
    let dir = Directory::parse(
        "[[contexts]]\nname = \"default\"\ndialplan = [\"default\"]\n\
             [[queues]]\nname = \"support\"\ncontext = \"default\"\n",
    )
    .unwrap();
    let core = PartitionCore::new("default", limits(100));
    let mut c = lock(&core);
    let (watcher, other) = (roomy_outbox(), roomy_outbox());
    for (id, o) in [(1, &watcher), (2, &other)] {
        c.subscribe(Subscribe {
            session: id,
            member: member(o),
            resume_after: None,
            ack: Box::new(|_| Bytes::from_static(b"{}\n")),
        })
        .unwrap();
    }
    assert!(c.watch_board(1, &dir).is_empty());
    let boards = |o: &Outbox| {
        o.queued_json()
            .into_iter()
            .filter(|m| m["class"] == "queue_stats")
            .collect::<Vec<_>>()
    };
    assert_eq!(boards(&watcher).len(), 1, "at once");
    c.tick_board(&dir);
    c.tick_board(&dir);
    assert_eq!(boards(&watcher).len(), 1, "nothing changed");
    let mut queued = (*call("4.1")).clone();
    queued.state = CallState::Queued;
    queued.queue = Some("support".into());
    c.publish(vec![Change::Call(
        EventKind::Queued,
        Arc::new(queued),
        timenow(),
    )]);
    c.tick_board(&dir);
    let got = boards(&watcher);
    assert_eq!(got.len(), 2);
    assert_eq!(got[1]["queues"][0]["waiting"], 1);
    assert!(boards(&other).is_empty(), "only to who asked");
}
