//! Acting on a call: `hangup`, `hold` and `resume` (the other party to music, then bridged
//! back), `park`, `record`. The user acts as their own leg of the call, or, for a role that
//! reaches colleagues' calls, as the leg of the colleague's line.

use super::args::{target, text};
use super::{Input, Step};
use crate::ami::AmiPacket;
use crate::cti::ErrorCode;

pub(super) fn plan(command: &str, i: &Input<'_>) -> Result<Vec<Step>, ErrorCode> {
    if command == "hangup" {
        let hangup = |name: &str| Step {
            tolerate: Some("No such channel"),
            ..Step::new(AmiPacket::action("Hangup").field("Channel", name.to_owned()))
        };
        let t = target(i.model, i.sender, i.req)?;
        return Ok(t.channels.iter().map(|c| hangup(&c.name)).collect());
    }
    let t = target(i.model, i.sender, i.req)?;
    let (own, _) = t.actor(i.sender, i.dir, i.model.pbx())?;
    let hold_context = &i.settings.hold_context;
    let packet = match command {
        "hold" => AmiPacket::action("Redirect")
            .field("Channel", t.peer(own, hold_context)?.name.clone())
            .field("Context", hold_context.clone())
            .field("Exten", "hold")
            .field("Priority", "1")
            .field("ExtraChannel", own.name.clone())
            .field("ExtraContext", hold_context.clone())
            .field("ExtraExten", "wait")
            .field("ExtraPriority", "1"),
        "resume" => AmiPacket::action("Bridge")
            .field("Channel1", own.name.clone())
            .field("Channel2", t.peer(own, hold_context)?.name.clone())
            .field("Tone", "no"),
        "park" => AmiPacket::action("Park")
            .field("Channel", t.peer(own, hold_context)?.name.clone())
            .field("TimeoutChannel", own.name.clone()),
        _ => match text(i.req, "subcommand")? {
            "start" => AmiPacket::action("MixMonitor")
                .field("Channel", own.name.clone())
                .field(
                    "File",
                    format!(
                        "ctid-{}-{}-{}.wav",
                        i.model.pbx(),
                        own.linkedid,
                        i.sender.user.login
                    ),
                )
                .field("Options", "b"),
            "stop" => AmiPacket::action("StopMixMonitor").field("Channel", own.name.clone()),
            _ => return Err(ErrorCode::Invalid("subcommand".into())),
        },
    };
    Ok(vec![Step::new(packet)])
}
