//! Who may act on what: the rules every path checks the same way (CTI, the store, and
//! later HTTP), kept here so that they are tested without actors.

use crate::calls::Call;

/// Who may set a call's disposition.
#[derive(Clone, Debug)]
pub struct Disposer {
    pub login: String,
    /// The user's line interface, if any.
    pub line: Option<String>,
    /// The context whose calls the user may touch; None: any (no context separation).
    pub context: Option<String>,
    pub supervisor: bool,
}

impl Disposer {
    /// The agent who handled a call (answered as its agent, or on its line), or a
    /// supervisor of one of its contexts.
    pub fn may_dispose(
        &self,
        contexts: &[String],
        agent_login: Option<&str>,
        lines: &[String],
    ) -> bool {
        let in_context = self
            .context
            .as_ref()
            .is_none_or(|own| contexts.contains(own));
        let handled = agent_login == Some(self.login.as_str())
            || self.line.as_ref().is_some_and(|l| lines.contains(l));
        in_context && (handled || self.supervisor)
    }

    /// [`Disposer::may_dispose`] for a call of the model.
    pub fn may_dispose_call(&self, call: &Call) -> bool {
        let agent = call.agent.as_ref().and_then(|a| a.login.as_deref());
        let lines: Vec<String> = call.lines.iter().cloned().collect();
        self.may_dispose(&call.contexts, agent, &lines)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(login: &str, line: Option<&str>, context: Option<&str>, supervisor: bool) -> Disposer {
        Disposer {
            login: login.into(),
            line: line.map(str::to_owned),
            context: context.map(str::to_owned),
            supervisor,
        }
    }

    #[test]
    fn the_handling_agent_or_a_supervisor_of_the_context_may_dispose() {
        let contexts = ["a".to_owned()];
        let lines = ["PJSIP/1002".to_owned()];
        let may = |d: Disposer| d.may_dispose(&contexts, Some("alice"), &lines);
        assert!(may(who("alice", None, Some("a"), false)), "the agent");
        assert!(
            may(who("bob", Some("PJSIP/1002"), Some("a"), false)),
            "on its line"
        );
        assert!(may(who("carol", None, Some("a"), true)), "a supervisor");
        assert!(!may(who("dave", None, Some("a"), false)), "another agent");
        assert!(
            !may(who("alice", None, Some("b"), false)),
            "another context"
        );
        assert!(
            !may(who("erin", None, Some("b"), true)),
            "another context's supervisor"
        );
        assert!(may(who("alice", None, None, false)), "no separation");
    }
}
