//! Actions under way on one AMI connection, matched by ActionID with what answers them:
//! their response, the items and `...Complete` event of a list, or an awaited event.
//! Responses and events may come in any order relative to other traffic; messages no
//! action waits for are events for downstream.

use std::collections::HashMap;

use super::AmiMessage;

/// What ends an action.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Completion {
    /// Its response.
    Response,
    /// `EventList: start`, the items, then the `...Complete` event.
    List,
    /// Its response, then the named event carrying the same ActionID (an async
    /// Originate's `OriginateResponse`).
    Event(&'static str),
}

/// What Asterisk answered to an action.
#[derive(Clone, Debug, Default)]
pub struct AmiReply {
    pub response: Option<AmiMessage>,
    /// List items, or the awaited event.
    pub events: Vec<AmiMessage>,
}

/// `Response: Error` and `Response: Failure` both mean no.
pub fn is_failure(status: &str) -> bool {
    status.eq_ignore_ascii_case("Error") || status.eq_ignore_ascii_case("Failure")
}

impl AmiReply {
    /// Asterisk's verdict: the response's, or the awaited event's `Response` field.
    pub fn outcome(&self) -> Result<(), String> {
        let verdict = self
            .events
            .last()
            .filter(|e| e.get("Response").is_some())
            .or(self.response.as_ref());
        match verdict {
            Some(m) if m.get("Response").is_some_and(is_failure) => Err(m
                .get("Message")
                .or_else(|| m.get("Reason"))
                .unwrap_or("failed")
                .to_owned()),
            _ => Ok(()),
        }
    }
}

/// What a message read from Asterisk meant to the actions under way.
#[derive(Debug)]
pub enum Routed<W> {
    /// No action waits for it.
    Unclaimed(AmiMessage),
    /// The first answer of list action `id`: its items follow.
    ListStarted(String),
    /// Kept for its action, which goes on.
    Kept,
    /// The action is over; an awaited event also goes downstream.
    Done(W, AmiReply, Option<AmiMessage>),
}

struct Action<W> {
    waiter: W,
    completion: Completion,
    response: Option<AmiMessage>,
    items: Vec<AmiMessage>,
}

/// The actions under way, each with what waits for it (`W`).
pub struct Actions<W> {
    prefix: &'static str,
    next: u64,
    pending: HashMap<String, Action<W>>,
}

impl<W> Actions<W> {
    /// ActionIDs will be `<prefix>-<n>`.
    pub fn new(prefix: &'static str) -> Self {
        Actions {
            prefix,
            next: 0,
            pending: HashMap::new(),
        }
    }

    /// A fresh ActionID.
    pub fn next_id(&mut self) -> String {
        self.next += 1;
        format!("{}-{}", self.prefix, self.next)
    }

    /// Action `id` was sent: `waiter` waits for its end.
    pub fn insert(&mut self, id: String, completion: Completion, waiter: W) {
        let action = Action {
            waiter,
            completion,
            response: None,
            items: Vec::new(),
        };
        self.pending.insert(id, action);
    }

    /// Forgets action `id` (it timed out); its waiter, if it was still under way.
    pub fn remove(&mut self, id: &str) -> Option<W> {
        self.pending.remove(id).map(|a| a.waiter)
    }

    /// Forgets every action (the connection is gone).
    pub fn drain(&mut self) -> impl Iterator<Item = W> + '_ {
        self.pending.drain().map(|(_, a)| a.waiter)
    }

    pub fn get(&self, id: &str) -> Option<&W> {
        self.pending.get(id).map(|a| &a.waiter)
    }

    pub fn any(&self, f: impl Fn(&W) -> bool) -> bool {
        self.pending.values().any(|a| f(&a.waiter))
    }

    /// Ends action `id`: its reply is built by `reply` from its stored response and items.
    fn done(
        &mut self,
        id: &str,
        reply: impl FnOnce(Option<AmiMessage>, Vec<AmiMessage>) -> AmiReply,
        also: Option<AmiMessage>,
    ) -> Routed<W> {
        match self.pending.remove(id) {
            Some(a) => Routed::Done(a.waiter, reply(a.response, a.items), also),
            None => Routed::Kept,
        }
    }

    /// A response: it ends its action, or starts its list or event wait.
    pub fn response(&mut self, m: AmiMessage) -> Routed<W> {
        let Some(id) = m.action_id().map(str::to_owned) else {
            return Routed::Unclaimed(m);
        };
        let Some(action) = self.pending.get_mut(&id) else {
            return Routed::Unclaimed(m);
        };
        let ok = !m.response().is_some_and(is_failure);
        let starts = ok
            && m.event_list()
                .is_some_and(|l| l.eq_ignore_ascii_case("start"));
        match action.completion {
            Completion::List if starts => {
                action.response = Some(m);
                Routed::ListStarted(id)
            }
            Completion::Event(_) if ok => {
                action.response = Some(m);
                Routed::Kept
            }
            _ => {
                let reply = |_, events| AmiReply {
                    response: Some(m),
                    events,
                };
                self.done(&id, reply, None)
            }
        }
    }

    /// An event: a list item or the end of a list, an awaited event (which also goes
    /// downstream), or an event for downstream.
    pub fn event(&mut self, m: AmiMessage) -> Routed<W> {
        let Some(id) = m.action_id().map(str::to_owned) else {
            return Routed::Unclaimed(m);
        };
        let Some(action) = self.pending.get_mut(&id) else {
            return Routed::Unclaimed(m);
        };
        match action.completion {
            // The Complete event closes the list; it is not one of its items.
            Completion::List
                if m.event_list()
                    .is_some_and(|l| l.eq_ignore_ascii_case("Complete")) =>
            {
                let reply = |response, events| AmiReply { response, events };
                self.done(&id, reply, None)
            }
            Completion::List => {
                action.items.push(m);
                Routed::Kept
            }
            Completion::Event(name) if m.event().is_some_and(|e| e.eq_ignore_ascii_case(name)) => {
                let awaited = m.clone();
                let reply = |response, _| AmiReply {
                    response,
                    events: vec![awaited],
                };
                self.done(&id, reply, Some(m))
            }
            _ => Routed::Unclaimed(m),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(text: &str) -> AmiMessage {
        AmiMessage::parse(&text.replace('|', "\r\n"))
    }

    #[test]
    fn a_list_gathers_its_items_until_complete_while_events_pass() {
        let mut a = Actions::new("t");
        let id = a.next_id();
        a.insert(id.clone(), Completion::List, "list");
        let started = a.response(msg(&format!(
            "Response: Success|ActionID: {id}|EventList: start|"
        )));
        assert!(matches!(started, Routed::ListStarted(ref i) if *i == id));
        let unrelated = a.event(msg("Event: Newchannel|Uniqueid: 1.1|"));
        assert!(matches!(unrelated, Routed::Unclaimed(_)));
        assert!(matches!(
            a.event(msg(&format!("Event: CoreShowChannel|ActionID: {id}|"))),
            Routed::Kept
        ));
        let done = a.event(msg(&format!(
            "Event: CoreShowChannelsComplete|ActionID: {id}|EventList: Complete|"
        )));
        let Routed::Done("list", reply, None) = done else {
            panic!("{done:?}");
        };
        assert_eq!(reply.events.len(), 1);
        assert!(reply.response.is_some());
        assert!(a.get(&id).is_none());
    }

    #[test]
    fn an_awaited_event_ends_its_action_and_also_goes_downstream() {
        let mut a = Actions::new("t");
        let id = a.next_id();
        a.insert(id.clone(), Completion::Event("OriginateResponse"), 7);
        // The event may overtake the response.
        let ok = a.response(msg(&format!("Response: Success|ActionID: {id}|")));
        assert!(matches!(ok, Routed::Kept));
        let done = a.event(msg(&format!(
            "Event: OriginateResponse|ActionID: {id}|Response: Failure|Reason: 5|"
        )));
        let Routed::Done(7, reply, Some(also)) = done else {
            panic!("{done:?}");
        };
        assert_eq!(also.event(), Some("OriginateResponse"));
        assert_eq!(reply.outcome(), Err("5".into()));
    }

    #[test]
    fn a_refused_list_ends_at_its_response_and_unknown_ids_are_unclaimed() {
        let mut a = Actions::new("t");
        let id = a.next_id();
        a.insert(id.clone(), Completion::List, ());
        let done = a.response(msg(&format!(
            "Response: Error|ActionID: {id}|Message: Permission denied|"
        )));
        let Routed::Done((), reply, None) = done else {
            panic!("{done:?}");
        };
        assert_eq!(reply.outcome(), Err("Permission denied".into()));
        let late = a.response(msg(&format!("Response: Success|ActionID: {id}|")));
        assert!(matches!(late, Routed::Unclaimed(_)));
    }
}
