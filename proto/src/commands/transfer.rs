//! Transfers of the user's own leg of a call (or, for a role that reaches colleagues' calls,
//! of the colleague's leg): `transfer` (blind), `atxfer` (attended: a consult call first),
//! then `atxfer_complete` (the transferer leaves, which completes it) or `atxfer_cancel`.

use super::args::{exten, target};
use super::{Input, Step};
use crate::ami::AmiPacket;
use crate::cti::ErrorCode;

pub(super) fn plan(command: &str, i: &Input<'_>) -> Result<Vec<Step>, ErrorCode> {
    let packet = match command {
        "transfer" | "atxfer" => {
            let destination = exten(i.req, "destination")?;
            let t = target(i.model, i.sender, i.req)?;
            let (own, line) = t.actor(i.sender, i.dir, i.model.pbx())?;
            let action = if command == "transfer" {
                "BlindTransfer"
            } else {
                "Atxfer"
            };
            AmiPacket::action(action)
                .field("Channel", own.name.clone())
                .field("Context", line.dialplan.clone())
                .field("Exten", destination.to_owned())
        }
        _ => {
            let t = target(i.model, i.sender, i.req)?;
            let (own, _) = t.actor(i.sender, i.dir, i.model.pbx())?;
            let action = if command == "atxfer_complete" {
                "Hangup"
            } else {
                "CancelAtxfer"
            };
            AmiPacket::action(action).field("Channel", own.name.clone())
        }
    };
    Ok(vec![Step::new(packet)])
}
