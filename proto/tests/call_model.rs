//! The call model against calls recorded from a real Asterisk 22.

mod common;

use std::collections::HashSet;

use common::{directory, events, fixture_names, run};
use ctid_proto::ami::AmiMessage;
use ctid_proto::calls::{
    coalesce, CallData, CallEvent, CallModel, CallState, Direction, EventKind, MAX_ATTACHED,
    MAX_DATA_BYTES, MAX_IVR_STEPS,
};
use ctid_proto::directory::{Directory, DEFAULT_PBX};
use proptest::prelude::*;

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
    assert!(
        out.iter().all(|e| e.call.id == "default:1795348189.2"),
        "one call"
    );
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
    let mut model = CallModel::new(DEFAULT_PBX);
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
        let mut model = CallModel::new(DEFAULT_PBX);
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
            let live: Vec<&str> = model.channels_of(&call.id).map(|c| c.uniqueid.as_str()).collect();
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
    let mut model = CallModel::new(DEFAULT_PBX);
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
    assert_eq!(offered.call.id, "default:1795348247.38");
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
    let mut model = CallModel::new(DEFAULT_PBX);
    for e in &all[..10] {
        model.apply(e, 1.0, &dir);
    }
    let out = model.attach("1795348247.38", None, data("lang", "fr"), 2.0);
    assert_eq!(out[0].kind, EventKind::Updated);
    assert_eq!(out[0].call.attached["lang"], "42");

    // Data waits a minute at most: the stale entry is dropped, the fresh one attaches.
    let mut model = CallModel::new(DEFAULT_PBX);
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
    let mut model = CallModel::new(DEFAULT_PBX);
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
