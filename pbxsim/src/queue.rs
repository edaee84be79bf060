//! Calls into queues: an outside caller enters a queue and waits; a member's phone rings
//! and answers (the member takes the call), or the caller hangs up first (abandons). The
//! events carry the fields of fixtures/ami/queue_call.txt (QueueCallerJoin, AgentCalled,
//! AgentConnect, AgentComplete, QueueCallerAbandon).

use std::time::Duration;

use ctid_proto::ami::AmiPacket;

use crate::calls::Chan;

/// A queue callers enter, from dialplan `context`, and its members: (interface, name).
#[derive(Clone, Debug)]
pub struct QueueSpec {
    pub context: String,
    pub queue: String,
    pub members: Vec<(String, String)>,
}

impl QueueSpec {
    /// Parses `DIALPLAN:QUEUE:INTERFACE,...`; members are named after their interface.
    pub fn parse(s: &str) -> Result<QueueSpec, String> {
        let bad = || {
            format!(
                "{s:?}: expected DIALPLAN:QUEUE:INTERFACE,..., e.g. internal:support:PJSIP/1001"
            )
        };
        let mut parts = s.splitn(3, ':');
        let (Some(context), Some(queue), Some(members)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let members: Vec<(String, String)> = members
            .split(',')
            .filter(|m| m.contains('/'))
            .map(|m| {
                (
                    m.to_owned(),
                    format!("Agent {}", m.rsplit('/').next().unwrap_or(m)),
                )
            })
            .collect();
        if context.is_empty() || queue.is_empty() || members.is_empty() {
            return Err(bad());
        }
        Ok(QueueSpec {
            context: context.to_owned(),
            queue: queue.to_owned(),
            members,
        })
    }
}

/// What queue calls to generate.
#[derive(Clone, Debug)]
pub struct QueuePlan {
    /// Calls arriving per second, on average, spread over the queues in turn.
    pub rate: f64,
    pub queues: Vec<QueueSpec>,
    /// How long a member's phone rings before they answer.
    pub ring: Duration,
    /// How long a member talks, and how long a caller waits before hanging up: each drawn
    /// between the two bounds.
    pub talk: (Duration, Duration),
    pub patience: (Duration, Duration),
    /// Stop after this many calls.
    pub limit: Option<u64>,
}

/// One caller in a queue, and the member who took it, if any.
#[derive(Clone, Debug)]
pub struct QueueCall {
    pub caller: Chan,
    pub queue: String,
    /// The member's channel, and their interface and name, once rung.
    pub member: Option<(Chan, String, String)>,
    bridge: String,
    connected: bool,
    seq: u64,
}

fn event(name: &str) -> AmiPacket {
    AmiPacket::event(name).field("Privilege", "call,all")
}

fn with_channel(mut p: AmiPacket, prefix: &str, c: &Chan) -> AmiPacket {
    let key = |k: &str| format!("{prefix}{k}");
    p.push(key("Channel"), c.name.clone());
    p.push(key("ChannelState"), c.state.to_string());
    p.push(key("CallerIDNum"), c.number.clone());
    p.push(key("CallerIDName"), c.name_display.clone());
    p.push(key("ConnectedLineNum"), c.connected_num.clone());
    p.push(key("ConnectedLineName"), c.connected_name.clone());
    p.push(key("Context"), c.context.clone());
    p.push(key("Exten"), c.exten.clone());
    p.push(key("Uniqueid"), c.uniqueid.clone());
    p.push(key("Linkedid"), c.linkedid.clone());
    p
}

impl QueueCall {
    /// Caller `number` (shown as `name`) dials `exten` in dialplan `context`, which sends
    /// the call to `queue`; call `seq`, with ids from `ids`.
    pub fn new(
        context: &str,
        queue: &str,
        number: &str,
        name: &str,
        seq: u64,
        ids: &mut dyn FnMut() -> String,
    ) -> QueueCall {
        let id = ids();
        QueueCall {
            caller: Chan {
                name: format!("PJSIP/trunk-{seq:08x}"),
                uniqueid: id.clone(),
                linkedid: id,
                state: 4,
                number: number.to_owned(),
                name_display: name.to_owned(),
                connected_num: String::new(),
                connected_name: String::new(),
                context: context.to_owned(),
                exten: queue.to_owned(),
                application: "Queue".into(),
                bridge: String::new(),
                codec: "ulaw".into(),
                translated_to: None,
            },
            queue: queue.to_owned(),
            member: None,
            bridge: format!("bridge-q{seq:08x}"),
            connected: false,
            seq,
        }
    }

    fn queue_event(&self, name: &str) -> AmiPacket {
        with_channel(event(name), "", &self.caller).field("Queue", self.queue.clone())
    }

    fn member_event(&self, name: &str) -> AmiPacket {
        let mut p = self.queue_event(name);
        if let Some((chan, interface, member)) = &self.member {
            p = with_channel(p, "Dest", chan)
                .field("Interface", interface.clone())
                .field("MemberName", member.clone());
        }
        p
    }

    /// The caller's channel, answered by the queue, joins it.
    pub fn join(&mut self) -> Vec<AmiPacket> {
        let new = with_channel(event("Newchannel"), "", &self.caller);
        self.caller.state = 6;
        vec![
            new,
            with_channel(event("Newstate"), "", &self.caller),
            self.queue_event("QueueCallerJoin")
                .field("Position", "1")
                .field("Count", "1"),
        ]
    }

    /// The queue rings member `interface` (`PJSIP/1001`), named `member`.
    pub fn ring(&mut self, interface: &str, member: &str, uniqueid: String) -> Vec<AmiPacket> {
        let chan = Chan {
            // Apart from the numbers of the other synthetic calls' channels.
            name: format!("{interface}-{:08x}", (1 << 30) + self.seq),
            uniqueid,
            linkedid: self.caller.linkedid.clone(),
            state: 0,
            number: interface.rsplit('/').next().unwrap_or(interface).to_owned(),
            name_display: member.to_owned(),
            connected_num: self.caller.number.clone(),
            connected_name: self.caller.name_display.clone(),
            context: self.caller.context.clone(),
            exten: "s".into(),
            application: "AppQueue".into(),
            bridge: String::new(),
            codec: "ulaw".into(),
            translated_to: None,
        };
        self.member = Some((chan.clone(), interface.to_owned(), member.to_owned()));
        let new = with_channel(event("Newchannel"), "", &chan);
        let called = self.member_event("AgentCalled");
        let dial = with_channel(
            with_channel(event("DialBegin"), "", &self.caller),
            "Dest",
            &chan,
        )
        .field("DialString", interface.to_owned());
        if let Some((c, _, _)) = &mut self.member {
            c.state = 5;
        }
        let ringing = self.member.as_ref().map(|(c, _, _)| c);
        let mut out = vec![new, called, dial];
        out.extend(ringing.map(|c| with_channel(event("Newstate"), "", c)));
        out
    }

    /// The member rung answers: the call is taken, and bridged.
    pub fn connect(&mut self) -> Vec<AmiPacket> {
        let Some((chan, _, _)) = &mut self.member else {
            return Vec::new();
        };
        chan.state = 6;
        chan.bridge = self.bridge.clone();
        self.caller.bridge = self.bridge.clone();
        self.caller.connected_num = chan.number.clone();
        self.caller.connected_name = chan.name_display.clone();
        let chan = chan.clone();
        self.connected = true;
        let dial_end = with_channel(
            with_channel(event("DialEnd"), "", &self.caller),
            "Dest",
            &chan,
        )
        .field("DialStatus", "ANSWER");
        let enter = |c: &Chan, n: &str| {
            with_channel(event("BridgeEnter"), "", c)
                .field("BridgeUniqueid", self.bridge.clone())
                .field("BridgeType", "basic")
                .field("BridgeNumChannels", n.to_owned())
        };
        vec![
            with_channel(event("Newstate"), "", &chan),
            dial_end,
            self.queue_event("QueueCallerLeave")
                .field("Position", "1")
                .field("Count", "0"),
            self.member_event("AgentConnect")
                .field("HoldTime", "1")
                .field("RingTime", "1"),
            event("BridgeCreate")
                .field("BridgeUniqueid", self.bridge.clone())
                .field("BridgeType", "basic"),
            enter(&chan, "1"),
            enter(&self.caller, "2"),
        ]
    }

    /// The call ends: after a talk, or by the caller while waiting (abandoned, after
    /// `waited`).
    pub fn hang_up(&self, waited: Duration) -> Vec<AmiPacket> {
        let hangup = |c: &Chan| {
            with_channel(event("Hangup"), "", c)
                .field("Cause", "16")
                .field("Cause-txt", "Normal Clearing")
        };
        let mut out = Vec::new();
        match (&self.member, self.connected) {
            (Some((chan, _, _)), true) => {
                for c in [chan, &self.caller] {
                    out.push(
                        with_channel(event("BridgeLeave"), "", c)
                            .field("BridgeUniqueid", self.bridge.clone())
                            .field("BridgeType", "basic"),
                    );
                }
                out.push(event("BridgeDestroy").field("BridgeUniqueid", self.bridge.clone()));
                out.push(self.member_event("AgentComplete").field("Reason", "caller"));
                out.push(hangup(chan));
            }
            (member, _) => {
                if let Some((chan, _, _)) = member {
                    out.push(hangup(chan));
                }
                out.push(
                    self.queue_event("QueueCallerAbandon")
                        .field("Position", "1")
                        .field("OriginalPosition", "1")
                        .field("HoldTime", waited.as_secs().to_string()),
                );
                out.push(
                    self.queue_event("QueueCallerLeave")
                        .field("Position", "1")
                        .field("Count", "0"),
                );
            }
        }
        out.push(hangup(&self.caller));
        out
    }

    /// Its live channels, for CoreShowChannels.
    pub fn channels(&self) -> Vec<Chan> {
        let mut chans = vec![self.caller.clone()];
        chans.extend(self.member.iter().map(|(c, _, _)| c.clone()));
        chans
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queue_spec_parses() {
        let q = QueueSpec::parse("internal:support:PJSIP/1001,PJSIP/1002").unwrap();
        assert_eq!(
            (q.context.as_str(), q.queue.as_str()),
            ("internal", "support")
        );
        assert_eq!(q.members[1], ("PJSIP/1002".into(), "Agent 1002".into()));
        assert!(QueueSpec::parse("internal:support").is_err());
        assert!(QueueSpec::parse("internal:support:1001").is_err());
    }

    #[test]
    fn a_taken_call_and_an_abandoned_one_carry_their_queue_and_one_linkedid() {
        let mut n = 0;
        let mut ids = || {
            n += 1;
            format!("1.{n}")
        };
        let mut taken = QueueCall::new("internal", "support", "0611", "Customer", 1, &mut ids);
        let mut events = taken.join();
        events.extend(taken.ring("PJSIP/1001", "Alice", "1.9".into()));
        events.extend(taken.connect());
        events.extend(taken.hang_up(Duration::from_secs(3)));
        let names: Vec<&str> = events.iter().map(|p| p.name()).collect();
        assert!(names.contains(&"AgentConnect") && !names.contains(&"QueueCallerAbandon"));
        assert!(events
            .iter()
            .all(|p| p.get("Linkedid").is_none_or(|l| l == "1.1")));
        let connect = events.iter().find(|p| p.name() == "AgentConnect").unwrap();
        assert_eq!(connect.get("Interface"), Some("PJSIP/1001"));
        assert_eq!(connect.get("Queue"), Some("support"));
        let abandoned = QueueCall::new("internal", "support", "0612", "Other", 2, &mut ids);
        let names: Vec<String> = abandoned
            .hang_up(Duration::from_secs(9))
            .iter()
            .map(|p| p.name().to_owned())
            .collect();
        assert_eq!(names, ["QueueCallerAbandon", "QueueCallerLeave", "Hangup"]);
    }

    /// The call model makes of these events a queued call, rung at the member's line, then
    /// taken by them.
    #[test]
    fn the_call_model_sees_the_queue_the_ringing_member_and_the_agent() {
        use ctid_proto::ami::AmiMessage;
        use ctid_proto::calls::{CallModel, CallState, EventKind};
        use ctid_proto::directory::Directory;
        let dir = Directory::parse(
            "[[contexts]]\nname = \"default\"\ndialplan = [\"internal\"]\n\
             [[queues]]\nname = \"support\"\ncontext = \"default\"\n\
             [[users]]\nid = 1\nlogin = \"alice\"\n\
             password = \"$argon2id$v=19$m=19456,t=2,p=1$PmUfvJSx/XoaiPI5CGZKyQ$widnLdjpam9VZ0OVSdxdkHJkTCIH1RSgZ5vw0n8DyHo\"\n\
             line = { interface = \"PJSIP/1001\", number = \"1001\", context = \"default\", dialplan = \"internal\" }\n",
        )
        .unwrap();
        let mut model = CallModel::new("default");
        let mut apply = |packets: Vec<AmiPacket>| {
            let mut out = Vec::new();
            for p in packets {
                let text = String::from_utf8_lossy(&p.to_bytes()).into_owned();
                out.extend(model.apply(&AmiMessage::parse(&text), 1.0, &dir));
            }
            out
        };
        let mut n = 0;
        let mut ids = || {
            n += 1;
            format!("1.{n}")
        };
        let mut call = QueueCall::new("internal", "support", "0611", "Customer", 1, &mut ids);
        let joined = apply(call.join());
        let queued = joined.iter().find(|e| e.kind == EventKind::Queued).unwrap();
        assert_eq!(queued.call.queue.as_deref(), Some("support"));
        assert_eq!(queued.call.contexts, ["default"]);
        assert_eq!(queued.call.state, CallState::Queued);
        let rung = apply(call.ring("PJSIP/1001", "Alice", "1.9".into()));
        let last = &rung.last().unwrap().call;
        assert!(last.lines.contains("PJSIP/1001"));
        assert_eq!(last.state, CallState::Ringing);
        let taken = apply(call.connect());
        let agent = taken
            .iter()
            .find(|e| e.kind == EventKind::AgentConnected)
            .unwrap();
        assert_eq!(
            agent.call.agent.as_ref().unwrap().login.as_deref(),
            Some("alice")
        );
        let ended = apply(call.hang_up(Duration::from_secs(5)));
        assert_eq!(ended.last().unwrap().kind, EventKind::Hungup);
    }
}
