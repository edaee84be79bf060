//! Placing calls: `dial` (from the user's own line), `originate` (from a line of the
//! context), `pickup` and `intercept` (a ringing call, to the user's own phone). Each is an
//! async Originate that rings the calling phone first and waits for its outcome.

use super::args::{caller_id, exten, member_line, target, text};
use super::{Input, Step, Wait};
use crate::ami::AmiPacket;
use crate::calls::CallState;
use crate::cti::ErrorCode;
use crate::directory::{Line, User};

pub(super) fn plan(command: &str, i: &Input<'_>) -> Result<Vec<Step>, ErrorCode> {
    match command {
        "dial" => {
            let line = i.line()?;
            let destination = exten(i.req, "destination")?;
            Ok(vec![originate(i.sender.user, line, destination, i)])
        }
        "originate" => {
            let pbx = i.model.pbx();
            let source = member_line(i.dir, i.sender, text(i.req, "source")?, Some(pbx))?;
            let owner = i
                .dir
                .user_by_interface(pbx, &source.interface)
                .ok_or(ErrorCode::Unallowed)?;
            let destination = exten(i.req, "destination")?;
            Ok(vec![originate(owner, source, destination, i)])
        }
        _ => pickup(i),
    }
}

/// `pickup` or `intercept`: the user's phone takes a call ringing elsewhere.
fn pickup(i: &Input<'_>) -> Result<Vec<Step>, ErrorCode> {
    let line = i.line()?;
    let t = target(i.model, i.sender, i.req)?;
    if t.state != CallState::Ringing {
        return Err(ErrorCode::Invalid("call_id".into()));
    }
    let ringing = t
        .channels
        .iter()
        .find(|c| c.state == 5)
        .ok_or(ErrorCode::Invalid("call_id".into()))?;
    let packet = AmiPacket::action("Originate")
        .field("Channel", line.interface.clone())
        .field("Application", "PickupChan")
        .field("Data", ringing.name.clone());
    Ok(vec![ringing_first(packet, i.sender.user, line, i)])
}

fn originate(user: &User, line: &Line, destination: &str, i: &Input<'_>) -> Step {
    let packet = AmiPacket::action("Originate")
        .field("Channel", line.interface.clone())
        .field("Context", line.dialplan.clone())
        .field("Exten", destination.to_owned())
        .field("Priority", "1");
    ringing_first(packet, user, line, i)
}

/// An async Originate that rings `line` first, for up to the originate timeout.
fn ringing_first(packet: AmiPacket, user: &User, line: &Line, i: &Input<'_>) -> Step {
    let mut step = Step::new(
        packet
            .field("CallerID", caller_id(user, line))
            .field("Timeout", i.settings.originate_timeout_ms.to_string())
            .field("Async", "true"),
    );
    step.wait = Wait::Event("OriginateResponse");
    step
}

/// What an OriginateResponse's `Reason` (an Asterisk control frame code) means.
pub fn originate_reason(reason: Option<&str>) -> String {
    match reason {
        Some("0") => "the call could not be placed".into(),
        Some("1") => "hung up".into(),
        Some("3") => "no answer".into(),
        Some("5") => "busy".into(),
        Some("8") => "congestion".into(),
        Some(other) => format!("failed (reason {other})"),
        None => "failed".into(),
    }
}
