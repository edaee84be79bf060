//! The call model against calls recorded from a real Asterisk 22.

use std::collections::HashSet;
use std::path::PathBuf;

use bytes::BytesMut;
use ctid_proto::ami::{AmiCodec, AmiFrame, AmiMessage, MessageKind};
use ctid_proto::calls::{
    coalesce, CallData, CallEvent, CallModel, CallState, Direction, EventKind, MAX_ATTACHED,
    MAX_DATA_BYTES, MAX_IVR_STEPS,
};
use ctid_proto::directory::Directory;
use proptest::prelude::*;
use tokio_util::codec::Decoder;

const PW: &str =
    "$argon2id$v=19$m=256,t=1,p=1$c2FsdHNhbHRzYWx0$LEoDiKolAdO6CICRtIsNfS7pzASNysREYbKPF9VwGok";

/// The recordings' world: phones are Local/100X@default, tenant A dials from `internal`,
/// tenant B lives in `tenant-b`.
fn directory() -> Directory {
    let mut text = String::from(
        "[[contexts]]\nname = \"default\"\ndialplan = [\"default\", \"internal\"]\n\
         [[contexts]]\nname = \"tenant-b\"\ndialplan = [\"tenant-b\", \"tenant-b-internal\"]\n\
         [[queues]]\nname = \"support\"\ncontext = \"default\"\n",
    );
    for (id, login, first, number) in [
        (1, "alice", "Alice", "1001"),
        (2, "bob", "Bob", "1002"),
        (3, "carol", "Carol", "1003"),
    ] {
        text.push_str(&format!(
            "[[users]]\nid = {id}\nlogin = \"{login}\"\npassword = \"{PW}\"\nfirstname = \"{first}\"\nlastname = \"Test\"\n\
             line = {{ interface = \"Local/{number}@default\", number = \"{number}\", context = \"default\", dialplan = \"internal\" }}\n"
        ));
    }
    Directory::parse(&text).unwrap()
}

fn events(name: &str) -> Vec<AmiMessage> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/ami")
        .join(format!("{name}.txt"));
    let mut buf = BytesMut::from(&std::fs::read(path).unwrap()[..]);
    let mut codec = AmiCodec::default();
    let mut out = Vec::new();
    while let Some(frame) = codec.decode_eof(&mut buf).unwrap() {
        if let AmiFrame::Message(m) = frame {
            if m.kind() == MessageKind::Event {
                out.push(m);
            }
        }
    }
    out
}

fn run(events: &[AmiMessage], dir: &Directory) -> (CallModel, Vec<CallEvent>) {
    let mut model = CallModel::new();
    let mut out = Vec::new();
    for (i, e) in events.iter().enumerate() {
        out.extend(model.apply(e, 1000.0 + i as f64, dir));
    }
    (model, out)
}

fn milestones(out: &[CallEvent]) -> Vec<EventKind> {
    out.iter()
        .map(|e| e.kind)
        .filter(|k| *k != EventKind::Updated)
        .collect()
}

#[test]
fn bridged_call_is_offered_ringing_answered_bridged_hungup() {
    let dir = directory();
    let (model, out) = run(&events("bridged_call"), &dir);
    use EventKind::*;
    assert_eq!(
        milestones(&out),
        [Offered, Ringing, Answered, Bridged, Hungup]
    );
    assert!(out.iter().all(|e| e.call.id == "1795348189.2"), "one call");
    assert_eq!(model.calls().count(), 0);
    assert_eq!(model.channel_count(), 0);

    // Asterisk says <unknown> for the originated channel: its line fills in.
    let offered = &out[0].call;
    assert_eq!(offered.caller.number.as_deref(), Some("1001"));
    assert_eq!(offered.caller.name.as_deref(), Some("Alice Test"));
    let end = &out.last().unwrap().call;
    assert_eq!(end.caller.number.as_deref(), Some("1001"));
    assert_eq!(end.caller.name.as_deref(), Some("Alice"));
    assert_eq!(end.callee.number.as_deref(), Some("1002"));
    assert_eq!(end.callee.name.as_deref(), Some("Bob Test"));
    assert_eq!(end.direction, Direction::Internal);
    assert_eq!(end.contexts, ["default"]);
    assert_eq!(end.ani.as_deref(), Some("1001"));
    assert_eq!(end.dnis.as_deref(), Some("1002"));
    assert_eq!(end.state, CallState::Ended);
    let (answered, ended) = (end.answered.unwrap(), end.ended.unwrap());
    assert!(end.created < answered && answered < ended);
    assert_eq!(end.hangup_cause.as_ref().unwrap().code, Some(16));
    assert_eq!(end.queue, None);
}

#[test]
fn queue_call_is_queued_then_connected_to_an_agent() {
    let dir = directory();
    let (_, out) = run(&events("queue_call"), &dir);
    use EventKind::*;
    assert_eq!(
        milestones(&out),
        [
            Offered,
            Queued,
            Ringing,
            Answered,
            AgentConnected,
            Bridged,
            Hungup
        ]
    );
    let offered = &out[0].call;
    assert_eq!(
        (&offered.caller.number, &offered.caller.name),
        (&None, &None),
        "<unknown> is null"
    );
    let queued = out.iter().find(|e| e.kind == Queued).unwrap();
    assert_eq!(queued.call.queue.as_deref(), Some("support"));
    assert_eq!(queued.call.state, CallState::Queued);
    let connected = &out.iter().find(|e| e.kind == AgentConnected).unwrap().call;
    let agent = connected.agent.as_ref().unwrap();
    assert_eq!(agent.login.as_deref(), Some("alice"));
    assert_eq!(agent.name.as_deref(), Some("Agent 1001"));
    assert_eq!(connected.caller.number.as_deref(), Some("5551234"));
    assert_eq!(connected.caller.name.as_deref(), Some("Customer"));
    assert_eq!(connected.direction, Direction::Inbound);
    assert_eq!(connected.dnis.as_deref(), Some("2001"));
    assert_eq!(connected.callee.number.as_deref(), Some("1001"));
    assert_eq!(connected.contexts, ["default"]);
}

#[test]
fn attended_and_blind_transfers_are_reported() {
    let dir = directory();
    for name in ["attended_transfer", "blind_transfer"] {
        let (model, out) = run(&events(name), &dir);
        let kinds = milestones(&out);
        assert!(kinds.contains(&EventKind::Transferred), "{name}: {kinds:?}");
        assert_eq!(kinds.last(), Some(&EventKind::Hungup), "{name}");
        assert_eq!(model.calls().count(), 0, "{name}");
    }
    let (_, out) = run(&events("attended_transfer"), &dir);
    let kinds = milestones(&out);
    assert!(
        kinds.contains(&EventKind::Held) && kinds.contains(&EventKind::Bridged),
        "{kinds:?}"
    );
    let (_, out) = run(&events("blind_transfer"), &dir);
    let t = out
        .iter()
        .find(|e| e.kind == EventKind::Transferred)
        .unwrap();
    assert_eq!(
        t.call.attached.get("transfer_target").map(String::as_str),
        Some("1003")
    );
}

#[test]
fn a_call_in_an_unknown_context_belongs_to_its_dialplan_context_or_none() {
    let dir = directory();
    let (_, out) = run(&events("agi_hangup_call"), &dir);
    assert!(
        out.iter().all(|e| e.call.contexts == ["tenant-b"]),
        "tenant-b dialplan maps to tenant-b"
    );
    let (_, out) = run(&events("agi_hangup_call"), &Directory::default());
    assert!(out.iter().all(|e| e.call.contexts.is_empty()));
    assert_eq!(milestones(&out).last(), Some(&EventKind::Hungup));
}

#[test]
fn updated_is_only_sent_for_visible_changes() {
    let dir = directory();
    let (_, out) = run(&events("bridged_call"), &dir);
    let updates: Vec<_> = out
        .iter()
        .filter(|e| e.kind == EventKind::Updated)
        .collect();
    assert!(updates.len() < 10, "{} updates for one call", updates.len());
    for pair in out.windows(2) {
        if pair[1].kind == EventKind::Updated && pair[0].call.id == pair[1].call.id {
            assert_ne!(pair[0].call, pair[1].call, "an update that changes nothing");
        }
    }
}

#[test]
fn user_events_attach_data_and_ivr_steps() {
    let dir = directory();
    let mut model = CallModel::new();
    let chan = "Channel: PJSIP/trunk-00000001\r\nUniqueid: 9.1\r\nLinkedid: 9.1\r\nContext: default\r\nExten: 2001\r\n";
    model.apply(
        &AmiMessage::parse(&format!(
            "Event: Newchannel\r\n{chan}CallerIDNum: 5550000\r\n"
        )),
        1.0,
        &dir,
    );
    let out = model.apply(
        &AmiMessage::parse(&format!(
            "Event: UserEvent\r\n{chan}UserEvent: CtiIvr\r\nStep: language\r\n"
        )),
        2.0,
        &dir,
    );
    assert_eq!(out[0].call.ivr_path, ["language"]);
    let out = model.apply(
        &AmiMessage::parse(&format!("Event: UserEvent\r\nPrivilege: user,all\r\n{chan}UserEvent: CtiAttach\r\naccount: 42\r\nlang: fr\r\n")),
        3.0,
        &dir,
    );
    let attached = &out[0].call.attached;
    assert_eq!(attached.len(), 2, "{attached:?}");
    assert_eq!(attached["account"], "42");
    let out = model.apply(
        &AmiMessage::parse(&format!(
            "Event: UserEvent\r\n{chan}UserEvent: Other\r\nx: 1\r\n"
        )),
        4.0,
        &dir,
    );
    assert!(out.is_empty());
}

#[test]
fn resync_ends_vanished_channels_and_adopts_unknown_ones() {
    let dir = directory();
    let all = events("bridged_call");
    let half = all
        .iter()
        .position(|e| e.event() == Some("BridgeEnter"))
        .unwrap();
    let (mut model, _) = run(&all[..half], &dir);
    assert_eq!(model.calls().count(), 1);
    let item = AmiMessage::parse(
        "Event: CoreShowChannel\r\nChannel: Local/1003@default-00000009;1\r\nChannelState: 6\r\nUniqueid: 7.7\r\nLinkedid: 7.7\r\nContext: default\r\nExten: 1003\r\nBridgeId: \r\n",
    );
    let out = model.resync(&[item], &[], 5000.0, &dir);
    let ended: Vec<_> = out.iter().filter(|e| e.kind == EventKind::Hungup).collect();
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0].call.id, "1795348189.2");
    assert!(out
        .iter()
        .any(|e| e.kind == EventKind::Offered && e.call.id == "7.7"));
    assert_eq!(
        model.calls().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        ["7.7"]
    );
}

#[test]
fn resync_puts_back_the_callers_waiting_in_queues() {
    let dir = directory();
    let mut model = CallModel::new();
    // A caller transferred into the queue: its Linkedid is not its Uniqueid.
    let channel = AmiMessage::parse(
        "Event: CoreShowChannel\r\nChannel: PJSIP/trunk-00000001\r\nChannelState: 6\r\nUniqueid: 8.1\r\nLinkedid: 8.0\r\nCallerIDNum: 0611223344\r\nContext: default\r\nExten: 3000\r\n",
    );
    // QueueStatus items: the queue's parameters, a member, and the caller waiting.
    let status: Vec<AmiMessage> = [
        "Event: QueueParams\r\nQueue: support\r\nCalls: 1\r\n",
        "Event: QueueMember\r\nQueue: support\r\nName: Alice\r\nStateInterface: PJSIP/1001\r\n",
        "Event: QueueEntry\r\nQueue: support\r\nPosition: 1\r\nChannel: PJSIP/trunk-00000001\r\nUniqueid: 8.1\r\nCallerIDNum: 0611223344\r\nWait: 12\r\n",
        "Event: QueueEntry\r\nQueue: support\r\nPosition: 2\r\nChannel: PJSIP/gone-00000009\r\nUniqueid: 9.9\r\n",
    ]
    .iter()
    .map(|t| AmiMessage::parse(t))
    .collect();
    let out = model.resync(std::slice::from_ref(&channel), &status, 10.0, &dir);
    let queued = out.iter().find(|e| e.kind == EventKind::Queued).unwrap();
    assert_eq!(queued.call.id, "8.0");
    assert_eq!(queued.call.queue.as_deref(), Some("support"));
    assert_eq!(queued.call.state, CallState::Queued);
    assert_eq!(
        model.calls().count(),
        1,
        "an entry of an unknown channel adds nothing"
    );
    // The next resync finds it as it was: nothing to tell.
    assert!(model
        .resync(std::slice::from_ref(&channel), &status, 20.0, &dir)
        .is_empty());
    // An agent took it after the list was made: the list does not put it back in the queue.
    let connect = AmiMessage::parse(
        "Event: AgentConnect\r\nChannel: PJSIP/trunk-00000001\r\nUniqueid: 8.1\r\nLinkedid: 8.0\r\nQueue: support\r\nInterface: PJSIP/1001\r\nMemberName: Alice\r\nDestChannel: PJSIP/1001-00000002\r\nDestUniqueid: 8.2\r\nDestLinkedid: 8.0\r\n",
    );
    model.apply(&connect, 25.0, &dir);
    let out = model.resync(&[channel], &status, 30.0, &dir);
    assert!(out.iter().all(|e| e.kind != EventKind::Queued), "{out:?}");
}

fn fixture_names() -> Vec<&'static str> {
    vec![
        "bridged_call",
        "queue_call",
        "attended_transfer",
        "blind_transfer",
        "redirect_transfer",
        "simple_originate",
        "agi_call",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Any reordering or dropping of a recording's events never panics, and never leaves a
    /// call open once the hangups of all its channels have been seen.
    #[test]
    fn reordered_or_dropped_events_never_leave_a_call_open(
        which in 0usize..7,
        order in proptest::collection::vec(any::<u32>(), 300),
        keep in proptest::collection::vec(0u8..10, 300),
    ) {
        let dir = directory();
        let all = events(fixture_names()[which]);
        let mut picked: Vec<(u32, &AmiMessage)> = all
            .iter()
            .enumerate()
            .filter(|(i, _)| keep[i % keep.len()] != 0)
            .map(|(i, e)| (order[i % order.len()], e))
            .collect();
        picked.sort_by_key(|(k, _)| *k);
        let mut model = CallModel::new();
        let mut hung_up = HashSet::new();
        for (i, (_, e)) in picked.iter().enumerate() {
            if e.event() == Some("Hangup") {
                hung_up.insert(e.get("Uniqueid").unwrap().to_owned());
            }
            let out = model.apply(e, i as f64, &dir);
            for ev in &out {
                prop_assert!(!ev.call.id.is_empty());
            }
        }
        for call in model.calls() {
            let live: Vec<&str> = call.channel_ids().collect();
            prop_assert!(!live.is_empty(), "call {} has no channel", call.id);
            for uid in live {
                prop_assert!(!hung_up.contains(uid), "channel {} hung up but still in call {}", uid, call.id);
            }
        }
    }
}

#[test]
fn coalescing_folds_updates_into_the_previous_event_of_the_call() {
    let dir = directory();
    let (_, out) = run(&events("bridged_call"), &dir);
    let folded = coalesce(out.clone());
    assert_eq!(
        milestones(&folded),
        milestones(&out),
        "milestones stay, in order"
    );
    assert!(
        folded.iter().all(|e| e.kind != EventKind::Updated),
        "{:?}",
        folded.iter().map(|e| e.kind).collect::<Vec<_>>()
    );
    // The offered event now shows what the following updates knew.
    let last_update_before_ringing = out
        .iter()
        .take_while(|e| e.kind != EventKind::Ringing)
        .last()
        .unwrap();
    assert_eq!(folded[0].kind, EventKind::Offered);
    assert_eq!(folded[0].call, last_update_before_ringing.call);
}

#[test]
fn agi_data_attaches_before_or_after_the_channel_is_seen() {
    let dir = directory();
    let data = |k: &str, step: &str| CallData {
        attached: [(k.to_owned(), "42".to_owned())].into(),
        ivr_steps: vec![step.to_owned()],
    };
    // Before: the AGI request for channel .39 (call .38) comes first and waits.
    let mut model = CallModel::new();
    assert!(model
        .attach(
            "1795348247.39",
            Some("1795348247.38"),
            data("account", "menu-1"),
            1.0
        )
        .is_empty());
    let (_, out) = {
        let mut out = Vec::new();
        for (i, e) in events("agi_call").iter().enumerate() {
            out.extend(model.apply(e, 2.0 + i as f64, &dir));
        }
        (model, out)
    };
    let offered = out.iter().find(|e| e.kind == EventKind::Offered).unwrap();
    assert_eq!(offered.call.id, "1795348247.38");
    let with_data = out.iter().find(|e| !e.call.attached.is_empty()).unwrap();
    assert_eq!(with_data.call.attached["account"], "42");
    assert_eq!(with_data.call.ivr_path, ["menu-1"]);
    assert_eq!(
        out.last().unwrap().call.attached["account"],
        "42",
        "kept to the end"
    );

    // After: the call is live, the data lands at once.
    let all = events("agi_call");
    let mut model = CallModel::new();
    for e in &all[..10] {
        model.apply(e, 1.0, &dir);
    }
    let out = model.attach("1795348247.38", None, data("lang", "fr"), 2.0);
    assert_eq!(out[0].kind, EventKind::Updated);
    assert_eq!(out[0].call.attached["lang"], "42");

    // Data waits a minute at most: the stale entry is dropped, the fresh one attaches.
    let mut model = CallModel::new();
    model.attach("9.9", None, data("stale", "old"), 0.0);
    model.attach("9.8", None, data("fresh", "new"), 100.0);
    let mut late = Vec::new();
    for e in &all {
        late.extend(model.apply(
            &AmiMessage::parse(&e.wire_text().replace("1795348247.3", "9.")),
            100.0,
            &dir,
        ));
    }
    let last = &late.last().unwrap().call;
    assert_eq!(last.attached.keys().collect::<Vec<_>>(), ["fresh"]);
    assert_eq!(last.ivr_path, ["new"]);
}

#[test]
fn a_calls_dialplan_data_is_bounded() {
    let dir = directory();
    let all = events("agi_call");
    let mut model = CallModel::new();
    for e in &all[..10] {
        model.apply(e, 1.0, &dir);
    }
    let mut last = None;
    for i in 0..MAX_ATTACHED + 10 {
        let data = CallData {
            attached: [(format!("key{i}"), "v".repeat(MAX_DATA_BYTES))].into(),
            ivr_steps: vec![format!("step{i}")],
        };
        last = model
            .attach("1795348247.38", None, data, 2.0)
            .pop()
            .or(last);
    }
    let oversized = CallData {
        attached: [("key0".to_owned(), "v".repeat(MAX_DATA_BYTES + 1))].into(),
        ivr_steps: vec!["s".repeat(MAX_DATA_BYTES + 1)],
    };
    assert!(model
        .attach("1795348247.38", None, oversized, 3.0)
        .is_empty());
    let call = last.unwrap().call;
    assert_eq!(call.attached.len(), MAX_ATTACHED);
    assert_eq!(call.attached["key0"].len(), MAX_DATA_BYTES);
    assert!(!call.attached.contains_key(&format!("key{MAX_ATTACHED}")));
    assert_eq!(call.ivr_path.len(), MAX_IVR_STEPS);
    assert_eq!(
        call.ivr_path.last().unwrap(),
        &format!("step{}", MAX_IVR_STEPS - 1)
    );
}
