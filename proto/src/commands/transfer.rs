//! Transfers of the user's own leg of a call: `transfer` (blind), `atxfer` (attended: a
//! consult call first), then `atxfer_complete` (the transferer leaves, which completes it)
//! or `atxfer_cancel`.

use super::args::{exten, target};
use super::{Input, Step};
use crate::ami::AmiPacket;
use crate::cti::ErrorCode;

pub(super) fn plan(command: &str, i: &Input<'_>) -> Result<Vec<Step>, ErrorCode> {
    let line = i.line()?;
    let packet = match command {
        "transfer" | "atxfer" => {
            let destination = exten(i.req, "destination")?;
            let own = target(i.model, i.sender, i.req)?.own(line)?;
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
            let own = target(i.model, i.sender, i.req)?.own(line)?;
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
