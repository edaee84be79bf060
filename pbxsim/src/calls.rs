//! Synthetic calls: a caller dials a callee of the same tenant, the callee rings, answers,
//! talks, and both hang up. The events carry the fields a real Asterisk 22 sends (see
//! fixtures/ami/bridged_call.txt), with consistent Uniqueid and Linkedid.

use std::collections::HashMap;
use std::time::Duration;

use ctid_proto::ami::AmiPacket;
use ctid_proto::calls::sample_rate;

/// A channel's codec unless the simulator is told otherwise.
pub const DEFAULT_CODEC: &str = "ulaw";

/// Numbers `first..=last` of one tenant: its phones are `<tech>/<number>` and call from
/// dialplan context `context`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tenant {
    pub context: String,
    pub tech: String,
    pub first: u32,
    pub last: u32,
}

impl Tenant {
    /// Parses `CONTEXT:FIRST-LAST` (e.g. `internal:1001-1010`); phones are PJSIP.
    pub fn parse(s: &str) -> Result<Tenant, String> {
        let bad = || format!("{s:?}: expected CONTEXT:FIRST-LAST, e.g. internal:1001-1010");
        let (context, range) = s.split_once(':').ok_or_else(bad)?;
        let (first, last) = range.split_once('-').ok_or_else(bad)?;
        let (first, last): (u32, u32) = (
            first.parse().map_err(|_| bad())?,
            last.parse().map_err(|_| bad())?,
        );
        if context.is_empty() || last <= first {
            return Err(bad());
        }
        Ok(Tenant {
            context: context.to_owned(),
            tech: "PJSIP".into(),
            first,
            last,
        })
    }
}

/// What calls to generate.
#[derive(Clone, Debug)]
pub struct CallPlan {
    /// Calls started per second.
    pub rate: f64,
    pub ring: Duration,
    pub talk: Duration,
    pub tenants: Vec<Tenant>,
    /// Stop after this many calls.
    pub limit: Option<u64>,
    /// The caller's channel is up before the callee rings (an answered Originate, an
    /// IVR), as in click-to-dial.
    pub caller_up: bool,
}

/// One channel as the simulator tracks it (for CoreShowChannels).
#[derive(Clone, Debug)]
pub struct Chan {
    pub name: String,
    pub uniqueid: String,
    pub linkedid: String,
    pub state: u8,
    pub number: String,
    pub name_display: String,
    pub connected_num: String,
    pub connected_name: String,
    pub context: String,
    pub exten: String,
    pub application: String,
    pub bridge: String,
    /// Its codec, as Asterisk names it.
    pub codec: String,
    /// The codec Asterisk translates its audio to and from, if it does.
    pub translated_to: Option<String>,
}

fn state_desc(state: u8) -> &'static str {
    match state {
        0 => "Down",
        4 => "Ring",
        5 => "Ringing",
        6 => "Up",
        _ => "Unknown",
    }
}

fn add_channel(p: &mut AmiPacket, prefix: &str, c: &Chan) {
    let key = |k: &str| format!("{prefix}{k}");
    p.push(key("Channel"), c.name.clone());
    p.push(key("ChannelState"), c.state.to_string());
    p.push(key("ChannelStateDesc"), state_desc(c.state));
    p.push(key("CallerIDNum"), c.number.clone());
    p.push(key("CallerIDName"), c.name_display.clone());
    p.push(key("ConnectedLineNum"), c.connected_num.clone());
    p.push(key("ConnectedLineName"), c.connected_name.clone());
    p.push(key("Language"), "en");
    p.push(key("AccountCode"), "");
    p.push(key("Context"), c.context.clone());
    p.push(key("Exten"), c.exten.clone());
    p.push(key("Priority"), "1");
    p.push(key("Uniqueid"), c.uniqueid.clone());
    p.push(key("Linkedid"), c.linkedid.clone());
}

fn call_event(name: &str, c: &Chan) -> AmiPacket {
    let mut p = AmiPacket::event(name).field("Privilege", "call,all");
    add_channel(&mut p, "", c);
    p
}

/// A CoreShowChannel list item for `c`.
pub fn core_show_channel(c: &Chan, action_id: &str) -> AmiPacket {
    let mut p = AmiPacket::event("CoreShowChannel").field("ActionID", action_id.to_owned());
    add_channel(&mut p, "", c);
    p.push("Application", c.application.clone());
    p.push("ApplicationData", "");
    p.push("Duration", "00:00:01");
    p.push("BridgeId", c.bridge.clone());
    p
}

/// A translation path as Asterisk writes it: `(ulaw@8000)->(slin@8000)->(g722@16000)`.
fn path(from: &str, to: &str) -> String {
    let rate = |codec| sample_rate(codec).unwrap_or(8000);
    format!(
        "({from}@{})->(slin@{})->({to}@{})",
        rate(from),
        rate(from),
        rate(to)
    )
}

/// A `Status` list item for `c`, with its formats and translation paths.
pub fn status(c: &Chan, action_id: &str) -> AmiPacket {
    let mut p = AmiPacket::event("Status").field("Privilege", "Call");
    add_channel(&mut p, "", c);
    let (read, write) = match &c.translated_to {
        Some(to) => (path(&c.codec, to), path(to, &c.codec)),
        None => (String::new(), String::new()),
    };
    p.push("BridgeID", c.bridge.clone());
    p.push("Application", c.application.clone());
    p.push("Data", "");
    p.push("Nativeformats", format!("({})", c.codec));
    p.push("Readformat", c.codec.clone());
    p.push("Readtrans", read);
    p.push("Writeformat", c.codec.clone());
    p.push("Writetrans", write);
    p.push("Callgroup", "0");
    p.push("Pickupgroup", "0");
    p.push("Seconds", "1");
    p.push("ActionID", action_id.to_owned());
    p
}

/// The stages of a call after it starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    Answer,
    Hangup,
}

/// One synthetic call and the events of each of its stages.
#[derive(Clone)]
pub struct Call {
    pub caller: Chan,
    pub callee: Chan,
    bridge: String,
    caller_up_first: bool,
}

impl Call {
    /// Call `seq`, with ids from `ids` (`<epoch>.<n>`, as Asterisk numbers them).
    pub fn new(tenant: &Tenant, seq: u64, ids: &mut dyn FnMut() -> String) -> Call {
        let span = u64::from(tenant.last - tenant.first + 1);
        let from = u64::from(tenant.first) + seq % span;
        let to = u64::from(tenant.first) + (seq + 1 + seq / span) % span;
        let to = if to == from {
            u64::from(tenant.first) + (from - u64::from(tenant.first) + 1) % span
        } else {
            to
        };
        Call::between(
            &tenant.context,
            &tenant.tech,
            &from.to_string(),
            &to.to_string(),
            seq,
            ids,
        )
    }

    /// Call `seq` from phone `tech/from` to number `to`, dialed in dialplan `context`.
    pub fn between(
        context: &str,
        tech: &str,
        from: &str,
        to: &str,
        seq: u64,
        ids: &mut dyn FnMut() -> String,
    ) -> Call {
        let caller_id = ids();
        let callee_id = ids();
        let chan = |number: &str, uniqueid: String, state: u8| Chan {
            name: format!("{tech}/{number}-{seq:08x}"),
            linkedid: caller_id.clone(),
            uniqueid,
            state,
            number: number.to_string(),
            name_display: format!("Phone {number}"),
            connected_num: String::new(),
            connected_name: String::new(),
            context: context.to_owned(),
            exten: to.to_owned(),
            application: "Dial".into(),
            bridge: String::new(),
            codec: DEFAULT_CODEC.to_owned(),
            translated_to: None,
        };
        let mut caller = chan(from, caller_id.clone(), 4);
        caller.connected_num = to.to_string();
        let mut callee = chan(to, callee_id, 0);
        callee.name = format!("{tech}/{to}-{:08x}", seq + (1 << 31));
        callee.connected_num = from.to_string();
        callee.connected_name = caller.name_display.clone();
        callee.application = "AppDial".into();
        callee.exten = "s".into();
        Call {
            caller,
            callee,
            bridge: format!("bridge-{seq:08x}"),
            caller_up_first: false,
        }
    }

    /// The call's audio, for call number `seq`: the callee (a phone) has the first of
    /// `codecs`, the caller each in turn; a caller on another codec is translated.
    pub fn with_codecs(mut self, codecs: &[String], seq: u64) -> Call {
        let Some(phone) = codecs.first() else {
            return self;
        };
        let caller = &codecs[(seq % codecs.len() as u64) as usize];
        self.callee.codec.clone_from(phone);
        self.caller.codec.clone_from(caller);
        self.caller.translated_to = (caller != phone).then(|| phone.clone());
        self
    }

    /// The caller's channel answers before it dials.
    pub fn caller_up(mut self) -> Call {
        self.caller_up_first = true;
        self
    }

    /// Newchannel of both legs (the caller up first, if so), the dial, and the callee
    /// ringing.
    pub fn start_events(&mut self) -> Vec<AmiPacket> {
        let mut first = vec![call_event("Newchannel", &self.caller)];
        if self.caller_up_first {
            self.caller.state = 6;
            first.push(call_event("Newstate", &self.caller));
        }
        let mut dial = call_event("DialBegin", &self.caller);
        add_channel(&mut dial, "Dest", &self.callee);
        dial.push("DialString", self.callee.number.clone());
        let new_callee = call_event("Newchannel", &self.callee);
        self.callee.state = 5;
        first.extend([new_callee, dial, call_event("Newstate", &self.callee)]);
        first
    }

    pub fn events(&mut self, stage: Stage) -> Vec<AmiPacket> {
        match stage {
            Stage::Answer => {
                self.callee.state = 6;
                self.caller.state = 6;
                self.caller.connected_name = self.callee.name_display.clone();
                self.caller.bridge = self.bridge.clone();
                self.callee.bridge = self.bridge.clone();
                let mut dial_end = call_event("DialEnd", &self.caller);
                add_channel(&mut dial_end, "Dest", &self.callee);
                dial_end.push("DialStatus", "ANSWER");
                let bridge = |name: &str| {
                    AmiPacket::event(name)
                        .field("Privilege", "call,all")
                        .field("BridgeUniqueid", self.bridge.clone())
                        .field("BridgeType", "basic")
                        .field("BridgeTechnology", "simple_bridge")
                        .field("BridgeCreator", "<unknown>")
                        .field("BridgeName", "<unknown>")
                        .field("BridgeNumChannels", "0")
                        .field("BridgeVideoSourceMode", "none")
                };
                let enter = |chan: &Chan, n: &str| {
                    let mut p = bridge("BridgeEnter");
                    add_channel(&mut p, "", chan);
                    p.push("BridgeNumChannels", n.to_owned());
                    p
                };
                vec![
                    call_event("Newstate", &self.callee),
                    dial_end,
                    call_event("Newstate", &self.caller),
                    bridge("BridgeCreate"),
                    enter(&self.callee, "1"),
                    enter(&self.caller, "2"),
                ]
            }
            Stage::Hangup => {
                let leave = |chan: &Chan| {
                    let mut p = AmiPacket::event("BridgeLeave")
                        .field("Privilege", "call,all")
                        .field("BridgeUniqueid", self.bridge.clone())
                        .field("BridgeType", "basic");
                    add_channel(&mut p, "", chan);
                    p
                };
                let hangup = |chan: &Chan| {
                    call_event("Hangup", chan)
                        .field("Cause", "16")
                        .field("Cause-txt", "Normal Clearing")
                };
                vec![
                    leave(&self.callee),
                    leave(&self.caller),
                    AmiPacket::event("BridgeDestroy")
                        .field("Privilege", "call,all")
                        .field("BridgeUniqueid", self.bridge.clone()),
                    hangup(&self.callee),
                    hangup(&self.caller),
                ]
            }
        }
    }
}

/// Live channels by Uniqueid, for CoreShowChannels.
#[derive(Default)]
pub struct ChannelTable(HashMap<String, Chan>);

impl ChannelTable {
    pub fn update(&mut self, call: &Call, ended: bool) {
        self.set(&[call.caller.clone(), call.callee.clone()], ended);
    }

    /// Adds or updates `chans`, or removes them (`ended`).
    pub fn set(&mut self, chans: &[Chan], ended: bool) {
        for c in chans {
            if ended {
                self.0.remove(&c.uniqueid);
            } else {
                self.0.insert(c.uniqueid.clone(), c.clone());
            }
        }
    }

    pub fn channels(&self) -> Vec<Chan> {
        let mut v: Vec<Chan> = self.0.values().cloned().collect();
        v.sort_by(|a, b| a.uniqueid.cmp(&b.uniqueid));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_parses() {
        assert_eq!(
            Tenant::parse("internal:1001-1010").unwrap(),
            Tenant {
                context: "internal".into(),
                tech: "PJSIP".into(),
                first: 1001,
                last: 1010
            }
        );
        assert!(Tenant::parse("internal").is_err());
        assert!(Tenant::parse("internal:5-5").is_err());
    }

    #[test]
    fn callers_take_the_codecs_in_turn_and_others_than_the_phones_are_translated() {
        let codecs: Vec<String> = ["g722", "ulaw"].map(String::from).to_vec();
        let mut n = 0;
        let mut ids = || {
            n += 1;
            format!("1.{n}")
        };
        let call = |seq, ids: &mut dyn FnMut() -> String| {
            Call::between("t", "PJSIP", "1", "2", seq, ids).with_codecs(&codecs, seq)
        };
        let same = call(0, &mut ids);
        assert_eq!(
            (same.caller.codec.as_str(), same.callee.codec.as_str()),
            ("g722", "g722")
        );
        let item = status(&same.caller, "s-1");
        assert_eq!(item.get("Readtrans"), Some(""));
        let other = call(1, &mut ids);
        assert_eq!(other.caller.codec, "ulaw");
        let item = status(&other.caller, "s-1");
        assert_eq!(item.get("Nativeformats"), Some("(ulaw)"));
        assert_eq!(
            item.get("Readtrans"),
            Some("(ulaw@8000)->(slin@8000)->(g722@16000)")
        );
        assert_eq!(
            item.get("Writetrans"),
            Some("(g722@16000)->(slin@16000)->(ulaw@8000)")
        );
        assert_eq!(item.get("Uniqueid"), Some(other.caller.uniqueid.as_str()));
    }

    #[test]
    fn a_call_never_dials_itself_and_ids_are_consistent() {
        let tenant = Tenant::parse("t:1-2").unwrap();
        let mut n = 0;
        let mut ids = || {
            n += 1;
            format!("1.{n}")
        };
        for seq in 0..10 {
            let mut call = Call::new(&tenant, seq, &mut ids);
            assert_ne!(call.caller.number, call.callee.number);
            let start = call.start_events();
            let linked: Vec<_> = start.iter().filter_map(|p| p.get("Linkedid")).collect();
            assert!(linked.iter().all(|l| *l == call.caller.uniqueid));
            let hangups = call.events(Stage::Hangup);
            assert_eq!(hangups.iter().filter(|p| p.name() == "Hangup").count(), 2);
        }
    }
}
