//! Media from the `Status` list a real Asterisk 22 answered (fixtures/ami/list_actions.txt),
//! applied to the calls of the same recording.

mod common;

use common::{directory, events};
use ctid_proto::ami::AmiMessage;
use ctid_proto::calls::{CallModel, EventKind, Media};
use ctid_proto::directory::DEFAULT_PBX;

/// The recording's call events up to its `Status` list, and that list's items.
fn before_and_status() -> (Vec<AmiMessage>, Vec<AmiMessage>) {
    let all = events("list_actions");
    let first = all
        .iter()
        .position(|m| m.action_id() == Some("status-1"))
        .expect("the recording has a Status list");
    let stream = all[..first]
        .iter()
        .filter(|m| m.action_id().is_none())
        .cloned()
        .collect();
    let items = all
        .iter()
        .filter(|m| m.action_id() == Some("status-1"))
        .cloned()
        .collect();
    (stream, items)
}

#[test]
fn the_status_items_of_asterisk_22_give_each_channel_its_codec() {
    let (_, items) = before_and_status();
    let statuses: Vec<&AmiMessage> = items
        .iter()
        .filter(|m| m.event() == Some("Status"))
        .collect();
    assert_eq!(statuses.len(), 4);
    assert!(items.last().unwrap().event() == Some("StatusComplete"));
    for item in statuses {
        let media = Media::from_status(item).expect("a Status item has formats");
        assert_eq!(media.codec.as_deref(), Some("slin"), "{item:?}");
        assert_eq!(media.sample_rate, Some(8000));
        assert!(!media.transcoding);
        assert_eq!((media.read_trans, media.write_trans), (None, None));
    }
}

#[test]
fn a_status_answer_is_one_updated_event_and_creates_or_ends_nothing() {
    let dir = directory();
    let (stream, items) = before_and_status();
    let mut model = CallModel::new(DEFAULT_PBX);
    for (i, e) in stream.iter().enumerate() {
        model.apply(e, 1000.0 + i as f64, &dir);
    }
    let calls = model.calls().count();
    let channels = model.channel_count();
    let id = "default:1795348237.30";
    assert_eq!(
        model.call(id).unwrap().media,
        None,
        "unknown until Asterisk says"
    );

    let out = model.apply_status(&items, 2000.0);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].kind, EventKind::Updated);
    assert_eq!(out[0].at, 2000.0);
    let media = out[0].call.media.clone().expect("media known");
    assert_eq!(media.codec.as_deref(), Some("slin"));
    assert_eq!(media.sample_rate, Some(8000));
    assert!(!media.transcoding);
    assert_eq!(model.call(id).unwrap().media, Some(media));
    assert_eq!(
        (model.calls().count(), model.channel_count()),
        (calls, channels)
    );

    assert!(model.apply_status(&items, 2001.0).is_empty(), "nothing new");

    // Stamped by Asterisk (with another codec now), the update has the list's time.
    let restamped = |m: &AmiMessage, t: &str| {
        let text = m
            .wire_text()
            .trim_end()
            .replace("Readformat: slin", "Readformat: g722");
        AmiMessage::parse(&format!("{text}\r\nTimestamp: {t}\r\n"))
    };
    let last = items.len() - 1;
    let stamped: Vec<AmiMessage> = items
        .iter()
        .enumerate()
        .map(|(i, m)| {
            restamped(
                m,
                if i == last {
                    "1733071201.25"
                } else {
                    "1733071200.5"
                },
            )
        })
        .collect();
    let out = model.apply_status(&stamped, 2002.0);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].at, 1733071201.25);
    let media = out[0].call.media.as_ref().unwrap();
    assert_eq!(media.codec.as_deref(), Some("g722"));
}

#[test]
fn a_status_of_channels_the_model_does_not_hold_is_ignored() {
    let dir = directory();
    let (_, items) = before_and_status();
    let mut model = CallModel::new(DEFAULT_PBX);
    assert!(model.apply_status(&items, 1.0).is_empty());
    assert_eq!((model.calls().count(), model.channel_count()), (0, 0));

    // A channel that hung up before the answer completed stays gone.
    let (stream, _) = before_and_status();
    for (i, e) in stream.iter().enumerate() {
        model.apply(e, 1000.0 + i as f64, &dir);
    }
    for uid in [
        "1795348237.30",
        "1795348237.31",
        "1795348238.32",
        "1795348238.33",
    ] {
        let hangup = AmiMessage::parse(&format!(
            "Event: Hangup\r\nUniqueid: {uid}\r\nLinkedid: 1795348237.30\r\nCause: 16\r\n"
        ));
        model.apply(&hangup, 3000.0, &dir);
    }
    assert_eq!(model.calls().count(), 0);
    assert!(model.apply_status(&items, 3001.0).is_empty());
    assert_eq!((model.calls().count(), model.channel_count()), (0, 0));
}

#[test]
fn a_stamped_event_is_timed_by_the_pbx_and_others_by_their_reading() {
    let dir = directory();
    let mut model = CallModel::new(DEFAULT_PBX);
    let new = |uid: &str, stamp: &str| {
        AmiMessage::parse(&format!(
            "Event: Newchannel\r\n{stamp}Channel: Local/1001@default-00000001;1\r\nUniqueid: {uid}\r\nLinkedid: {uid}\r\nContext: internal\r\nExten: 1002\r\n"
        ))
    };
    let stamped = model.apply(
        &new("5.1", "Timestamp: 1733071200.123456\r\n"),
        1796145600.0,
        &dir,
    );
    assert_eq!(stamped[0].at, 1733071200.123456);
    let unstamped = model.apply(&new("5.2", ""), 1796145600.5, &dir);
    assert_eq!(unstamped[0].at, 1796145600.5);
}
