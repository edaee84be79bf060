//! Queue membership: an agent's own (`agentlogin`, `agentlogout`, `agentpause`,
//! `agentunpause`), and a member's of one queue of the context (`queueadd`,
//! `queueremove`, `queuepause`, `queueunpause`).

use serde_json::Value;

use super::args::{member_line, queue_names, text};
use super::{Input, Step};
use crate::ami::AmiPacket;
use crate::cti::ErrorCode;

pub(super) fn plan(command: &str, i: &Input<'_>) -> Result<Vec<Step>, ErrorCode> {
    match command {
        "agentlogin" | "agentlogout" => {
            let line = i.line()?;
            let steps = queue_names(i.dir, i.sender, i.req, i.model.pbx())?
                .into_iter()
                .map(|q| {
                    let packet = AmiPacket::action(if command == "agentlogin" {
                        "QueueAdd"
                    } else {
                        "QueueRemove"
                    })
                    .field("Queue", q)
                    .field("Interface", line.interface.clone());
                    Step::new(if command == "agentlogin" {
                        packet.field("MemberName", i.sender.user.fullname())
                    } else {
                        packet
                    })
                })
                .collect();
            Ok(steps)
        }
        "agentpause" | "agentunpause" => {
            let line = i.line()?;
            let packet = AmiPacket::action("QueuePause")
                .field("Interface", line.interface.clone())
                .field("Paused", (command == "agentpause").to_string());
            Ok(vec![Step::new(with_reason(packet, i))])
        }
        _ => {
            let (queue, pbx) = (text(i.req, "queue")?, i.model.pbx());
            if !i
                .dir
                .queue(pbx, queue)
                .is_some_and(|q| i.sender.may_use_context(&q.context))
            {
                return Err(ErrorCode::Unallowed);
            }
            let member = member_line(i.dir, i.sender, text(i.req, "member")?, Some(pbx))?;
            let action = match command {
                "queueadd" => "QueueAdd",
                "queueremove" => "QueueRemove",
                _ => "QueuePause",
            };
            let packet = AmiPacket::action(action)
                .field("Queue", queue.to_owned())
                .field("Interface", member.interface.clone());
            if action != "QueuePause" {
                return Ok(vec![Step::new(packet)]);
            }
            let paused = command == "queuepause"
                && i.req
                    .fields
                    .get("paused")
                    .and_then(Value::as_bool)
                    .unwrap_or(true);
            let packet = packet.field("Paused", paused.to_string());
            Ok(vec![Step::new(with_reason(packet, i))])
        }
    }
}

/// The pause reason the client gave, if any.
fn with_reason(mut packet: AmiPacket, i: &Input<'_>) -> AmiPacket {
    if let Some(reason) = i.req.str("reason") {
        packet.push("Reason", reason.to_owned());
    }
    packet
}
