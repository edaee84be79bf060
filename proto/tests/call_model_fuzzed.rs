//! Inputs on which fuzzing found the call model breaking what clients rely on: a call ended
//! and made again by one AMI event was offered anew before the hungup of its first life
//! (ended calls' hungups came after every other event of the AMI event).

use ctid_proto::ami::AmiMessage;
use ctid_proto::calls::{CallEvent, CallModel, EventKind};
use ctid_proto::directory::Directory;

/// The kinds of the events of call `id`, in order.
fn kinds_of(out: &[CallEvent], id: &str) -> Vec<EventKind> {
    out.iter()
        .filter(|e| e.call.id == id)
        .map(|e| e.kind)
        .collect()
}

#[test]
fn a_call_ended_and_made_again_by_one_event_is_offered_after_its_hungup() {
    let dir = Directory::default();
    let mut model = CallModel::new(ctid_proto::directory::DEFAULT_PBX);
    let newchannel = "Event: Newchannel\r\nUniqueid: 1.2\r\nLinkedid: 1.1\r\n\r\n";
    model.apply(&AmiMessage::parse(newchannel), 1.0, &dir);
    // Channel 1.2 moves to call 1.3, which ends call 1.1; channel 1.4 makes call 1.1 again.
    let dial = "Event: DialBegin\r\nUniqueid: 1.2\r\nLinkedid: 1.3\r\n\
                DestUniqueid: 1.4\r\nDestLinkedid: 1.1\r\n\r\n";
    let out = model.apply(&AmiMessage::parse(dial), 2.0, &dir);
    assert!(
        model.call("default:1.1").is_some(),
        "call 1.1 is live again"
    );
    assert_eq!(
        kinds_of(&out, "default:1.1"),
        [EventKind::Hungup, EventKind::Offered],
        "clients must see the end of the first call 1.1 before the second"
    );
}

#[test]
fn a_call_ended_and_made_again_within_one_event_is_offered_after_its_hungup() {
    let dir = Directory::default();
    let mut model = CallModel::new(ctid_proto::directory::DEFAULT_PBX);
    // Channel 1.3 makes call 1.3, moves to call 1.0 (ending 1.3), and, in the snapshot
    // without a Linkedid, moves back (ending 1.0, making 1.3 again).
    let transfer = "Event: AttendedTransfer\r\n\
                    OrigTransfererUniqueid: 1.3\r\nOrigTransfererLinkedid: 1.3\r\n\
                    SecondTransfererUniqueid: 1.3\r\nSecondTransfererLinkedid: 1.0\r\n\
                    TransfereeUniqueid: 1.3\r\n\r\n";
    let out = model.apply(&AmiMessage::parse(transfer), 1.0, &dir);
    assert!(model.call("default:1.3").is_some(), "call 1.3 is live");
    assert_eq!(
        kinds_of(&out, "default:1.3"),
        [EventKind::Offered, EventKind::Hungup, EventKind::Offered],
        "clients must see the end of the first call 1.3 before the second"
    );
}
