//! Resyncs against calls recorded from a real Asterisk 22: a list applied where it was
//! taken in the stream changes only what it proves wrong, so a resync at any point of a
//! call whose events all arrive changes nothing.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};

use common::{directory, events, fixture_names, run};
use ctid_proto::ami::AmiMessage;
use ctid_proto::calls::{CallEvent, CallModel, CallState, EventKind};
use ctid_proto::directory::{Directory, DEFAULT_PBX};

/// Asterisk's own view, rebuilt from its events: what CoreShowChannels and QueueStatus
/// would list after each event.
#[derive(Default)]
struct Pbx {
    channels: BTreeMap<String, BTreeMap<String, String>>,
    dead: HashSet<String>,
    /// Callers waiting in queues: Uniqueid -> (queue, channel).
    waiting: BTreeMap<String, (String, String)>,
}

/// Prefixes of the channel snapshots an event may carry.
const SNAPSHOTS: [&str; 8] = [
    "",
    "Dest",
    "Transferer",
    "Transferee",
    "OrigTransferer",
    "SecondTransferer",
    "TransferTarget",
    "LocalOne",
];
const FIELDS: [&str; 8] = [
    "Channel",
    "ChannelState",
    "CallerIDNum",
    "CallerIDName",
    "Context",
    "Exten",
    "Uniqueid",
    "Linkedid",
];

impl Pbx {
    fn apply(&mut self, ev: &AmiMessage) {
        for prefix in SNAPSHOTS {
            let Some(uid) = ev.get(&format!("{prefix}Uniqueid")) else {
                continue;
            };
            if self.dead.contains(uid) {
                continue;
            }
            let ch = self.channels.entry(uid.to_owned()).or_default();
            for f in FIELDS {
                if let Some(v) = ev.get(&format!("{prefix}{f}")) {
                    ch.insert(f.to_owned(), v.to_owned());
                }
            }
        }
        let uid = ev.get("Uniqueid").unwrap_or("").to_owned();
        match ev.event().unwrap_or("") {
            "BridgeEnter" => {
                if let Some(ch) = self.channels.get_mut(&uid) {
                    let bridge = ev.get("BridgeUniqueid").unwrap_or("");
                    ch.insert("BridgeId".into(), bridge.to_owned());
                }
            }
            "BridgeLeave" => {
                if let Some(ch) = self.channels.get_mut(&uid) {
                    ch.insert("BridgeId".into(), String::new());
                }
            }
            "QueueCallerJoin" => {
                let queue = ev.get("Queue").unwrap_or("").to_owned();
                let channel = ev.get("Channel").unwrap_or("").to_owned();
                self.waiting.insert(uid, (queue, channel));
            }
            "QueueCallerLeave" | "QueueCallerAbandon" => {
                self.waiting.remove(&uid);
            }
            "Hangup" => {
                self.channels.remove(&uid);
                self.waiting.remove(&uid);
                self.dead.insert(uid);
            }
            _ => {}
        }
    }

    fn core_show_channels(&self) -> Vec<AmiMessage> {
        self.channels
            .values()
            .map(|fields| {
                let mut text = String::from("Event: CoreShowChannel\r\nActionID: ctid-1\r\n");
                for (k, v) in fields {
                    text.push_str(&format!("{k}: {v}\r\n"));
                }
                AmiMessage::parse(&text)
            })
            .collect()
    }

    fn queue_status(&self) -> Vec<AmiMessage> {
        self.waiting
            .iter()
            .enumerate()
            .map(|(i, (uid, (queue, channel)))| {
                AmiMessage::parse(&format!(
                    "Event: QueueEntry\r\nActionID: ctid-2\r\nQueue: {queue}\r\nPosition: {}\r\nChannel: {channel}\r\nUniqueid: {uid}\r\n",
                    i + 1
                ))
            })
            .collect()
    }
}

type Lists = (Vec<AmiMessage>, Vec<AmiMessage>);

/// Asterisk's lists (channels, queue entries) after each number of events, 0 to all.
fn lists_after_each(all: &[AmiMessage]) -> Vec<Lists> {
    let mut pbx = Pbx::default();
    let mut out = vec![(pbx.core_show_channels(), pbx.queue_status())];
    for e in all {
        pbx.apply(e);
        out.push((pbx.core_show_channels(), pbx.queue_status()));
    }
    out
}

/// Replays `all`, with lists taken after event `taken` applied once event `applied` has
/// been (events keep flowing while a list is under way). Returns the call events of the
/// replay and those of the resync alone.
fn replay_with_resync(
    all: &[AmiMessage],
    (live, waiting): &Lists,
    taken: usize,
    applied: usize,
    dir: &Directory,
) -> (Vec<CallEvent>, Vec<CallEvent>) {
    let mut model = CallModel::new(DEFAULT_PBX);
    let mut out = Vec::new();
    let mut mark = None;
    let mut resync = Vec::new();
    for (i, e) in all.iter().enumerate() {
        if i == taken {
            mark = Some(model.mark());
        }
        if i == applied {
            let at = mark.unwrap_or_else(|| model.mark());
            resync.extend(model.resync_channels(at, live, 5000.0, dir));
            resync.extend(model.resync_queues(at, waiting, 0.0, dir));
        }
        out.extend(model.apply(e, 1000.0 + i as f64, dir));
    }
    (out, resync)
}

#[test]
fn a_resync_at_any_point_of_a_complete_stream_changes_nothing() {
    let dir = directory();
    for name in fixture_names() {
        let all = events(name);
        let (_, expected) = run(&all, &dir);
        let lists = lists_after_each(&all);
        for (taken, list) in lists.iter().enumerate().take(all.len()) {
            // The list is applied where it was taken, or a few events later.
            for late in [0, 1, 3, 8] {
                let applied = (taken + late).min(all.len() - 1).max(taken);
                let (out, resync) = replay_with_resync(&all, list, taken, applied, &dir);
                assert!(
                    resync.is_empty(),
                    "{name}: a list taken after event {taken} and applied after {applied} told {:?}",
                    resync.iter().map(|e| (e.kind, &e.call.id)).collect::<Vec<_>>()
                );
                assert!(
                    out == expected,
                    "{name}: a resync after event {taken} (applied after {applied}) changed the call events"
                );
            }
        }
    }
}

/// The event index at which each call got each milestone, in a replay.
fn milestones(out: &[(usize, CallEvent)]) -> HashMap<(String, EventKind), usize> {
    let mut at = HashMap::new();
    for (i, e) in out {
        at.entry((e.call.id.clone(), e.kind)).or_insert(*i);
    }
    at
}

/// Events lost while the link was down (from `lost` to `back`), then a resync: the model
/// never announces a milestone before it happened, and every call ends once.
#[test]
fn a_resync_after_lost_events_never_invents_a_milestone() {
    let dir = directory();
    for name in fixture_names() {
        let all = events(name);
        let mut model = CallModel::new(DEFAULT_PBX);
        let mut expected = Vec::new();
        for (i, e) in all.iter().enumerate() {
            expected.extend(model.apply(e, i as f64, &dir).into_iter().map(|e| (i, e)));
        }
        let truth = milestones(&expected);
        let lists = lists_after_each(&all);
        for lost in (0..all.len()).step_by(3) {
            for back in [lost + 1, lost + 5, lost + 20] {
                let back = back.min(all.len());
                let (live, waiting) = &lists[back];
                let mut model = CallModel::new(DEFAULT_PBX);
                let mut out = Vec::new();
                for i in 0..=all.len() {
                    if i == back {
                        let at = model.mark();
                        let told = model.resync_channels(at, live, back as f64, &dir);
                        out.extend(told.into_iter().map(|e| (i, e)));
                        let told = model.resync_queues(at, waiting, 0.0, &dir);
                        out.extend(told.into_iter().map(|e| (i, e)));
                    }
                    if (lost..back).contains(&i) || i == all.len() {
                        continue;
                    }
                    out.extend(
                        model
                            .apply(&all[i], i as f64, &dir)
                            .into_iter()
                            .map(|e| (i, e)),
                    );
                }
                for ((call, kind), i) in milestones(&out) {
                    if matches!(
                        kind,
                        EventKind::Offered | EventKind::Updated | EventKind::Hungup
                    ) {
                        continue;
                    }
                    let real = truth.get(&(call.clone(), kind));
                    assert!(
                        real.is_some_and(|r| *r <= i),
                        "{name}: events {lost}..{back} lost: {kind:?} of {call} told at event {i}, it happened at {real:?}"
                    );
                }
                let mut ended = HashSet::new();
                for (_, e) in out.iter().filter(|(_, e)| e.kind == EventKind::Hungup) {
                    assert!(
                        ended.insert(e.call.id.clone()),
                        "{name}: {} ended twice",
                        e.call.id
                    );
                }
                assert_eq!(
                    model.calls().count(),
                    0,
                    "{name}: events {lost}..{back} lost"
                );
            }
        }
    }
}

/// The case seen on a real Asterisk: the caller's channel is up (it answered an
/// Originate) while the callee still rings. A resync then must not answer the call.
#[test]
fn a_caller_up_while_the_callee_rings_is_not_an_answered_call() {
    let dir = directory();
    let all = events("bridged_call");
    let ringing = all
        .iter()
        .position(|e| e.event() == Some("DialState") && e.get("Channel").is_some())
        .expect("the callee rings");
    let (mut model, out) = run(&all[..=ringing], &dir);
    assert!(out.iter().all(|e| e.kind != EventKind::Answered));
    let (live, _) = &lists_after_each(&all)[ringing + 1];
    assert!(
        live.iter().any(|c| c.get("ChannelState") == Some("6")),
        "the recording has an Up channel while the callee rings"
    );
    let mark = model.mark();
    let told = model.resync_channels(mark, live, 1.0, &dir);
    assert!(told.is_empty(), "{told:?}");
    let call = model.calls().next().unwrap();
    assert_eq!((call.state, call.answered), (CallState::Ringing, None));
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
    let mark = model.mark();
    let out = model.resync_channels(mark, &[item], 5000.0, &dir);
    let ended: Vec<_> = out.iter().filter(|e| e.kind == EventKind::Hungup).collect();
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0].call.id, "default:1795348189.2");
    assert!(out
        .iter()
        .any(|e| e.kind == EventKind::Offered && e.call.id == "default:7.7"));
    assert_eq!(
        model.calls().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        ["default:7.7"]
    );
}

/// A channel created while the list was under way is not in it, and must not be ended.
#[test]
fn a_channel_newer_than_the_list_is_kept() {
    let dir = directory();
    let all = events("bridged_call");
    let mut model = CallModel::new(DEFAULT_PBX);
    let mark = model.mark();
    let mut out = Vec::new();
    for (i, e) in all.iter().take(5).enumerate() {
        out.extend(model.apply(e, i as f64, &dir));
    }
    assert_eq!(model.calls().count(), 1);
    assert!(model.resync_channels(mark, &[], 9.0, &dir).is_empty());
    assert_eq!(
        model.calls().count(),
        1,
        "the call began after the list was taken"
    );
}

#[test]
fn resync_puts_back_the_callers_waiting_in_queues() {
    let dir = directory();
    let mut model = CallModel::new(DEFAULT_PBX);
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
    let mark = model.mark();
    model.resync_channels(mark, std::slice::from_ref(&channel), 10.0, &dir);
    let out = model.resync_queues(mark, &status, 0.0, &dir);
    let queued = out.iter().find(|e| e.kind == EventKind::Queued).unwrap();
    assert_eq!(queued.call.id, "default:8.0");
    assert_eq!(queued.call.queue.as_deref(), Some("support"));
    assert_eq!(queued.call.state, CallState::Queued);
    assert_eq!(
        model.calls().count(),
        1,
        "an entry of an unknown channel adds nothing"
    );
    // The next resync finds it as it was: nothing to tell.
    let mark = model.mark();
    assert!(model
        .resync_channels(mark, std::slice::from_ref(&channel), 20.0, &dir)
        .is_empty());
    assert!(model.resync_queues(mark, &status, 0.0, &dir).is_empty());
    // An agent took it after the list was taken: the list does not put it back.
    let connect = AmiMessage::parse(
        "Event: AgentConnect\r\nChannel: PJSIP/trunk-00000001\r\nUniqueid: 8.1\r\nLinkedid: 8.0\r\nQueue: support\r\nInterface: PJSIP/1001\r\nMemberName: Alice\r\nDestChannel: PJSIP/1001-00000002\r\nDestUniqueid: 8.2\r\nDestLinkedid: 8.0\r\n",
    );
    let mark = model.mark();
    model.apply(&connect, 25.0, &dir);
    let out = model.resync_queues(mark, &status, 0.0, &dir);
    assert!(out.is_empty(), "{out:?}");
}
