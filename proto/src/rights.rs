//! Who may act on what: the rules every path checks the same way (CTI, the store, and
//! later HTTP), kept here so that they are tested without actors.
//!
//! A user's role (in the directory) sets how far they reach; each command names what it
//! acts on ([`Target`], in the commands' table). The two together decide, and
//! docs/protocol.md's table of command × role is checked against them.

use serde::{Deserialize, Serialize};

use crate::calls::Call;

/// A user's role, from the directory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    #[default]
    Agent,
    Supervisor,
    /// For tools, not people: every context, even with context separation.
    Admin,
}

/// How far a role reaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reach {
    /// The user's own line, and the calls it is in.
    Own,
    /// Every line and call of the user's context (of every context without separation).
    Context,
    /// Every line and call of every context, separation or not.
    Any,
}

/// What a command acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The sender's own line, whatever their role: `dial`, `agentlogin`, ...
    OwnLine,
    /// A line the request names: `originate`'s source, a queue member.
    Line,
    /// A call: `hangup`, transfers, `hold`, `park`, `record`, `pickup`, `disposition`.
    Call,
}

/// Every role and how far it reaches.
pub const ROLES: [(Role, Reach); 3] = [
    (Role::Agent, Reach::Own),
    (Role::Supervisor, Reach::Context),
    (Role::Admin, Reach::Any),
];

impl Role {
    pub fn reach(self) -> Reach {
        ROLES
            .iter()
            .find(|(role, _)| *role == self)
            .map_or(Reach::Own, |(_, reach)| *reach)
    }

    pub fn name(self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::Supervisor => "supervisor",
            Role::Admin => "admin",
        }
    }
}

/// What a role may act on with a command of `target`, as `login_capas` and the docs say it.
pub fn scope(target: Target, role: Role) -> &'static str {
    match (target, role.reach()) {
        (Target::OwnLine, _) => "own line",
        (Target::Line, Reach::Own) => "own line",
        (Target::Line, Reach::Context) => "lines of the context",
        (Target::Line, Reach::Any) => "any line",
        (Target::Call, Reach::Own) => "own calls",
        (Target::Call, Reach::Context) => "calls of the context",
        (Target::Call, Reach::Any) => "any call",
    }
}

/// Who may set a call's disposition.
#[derive(Clone, Debug)]
pub struct Disposer {
    pub login: String,
    /// The user's line interface, if any.
    pub line: Option<String>,
    /// The context whose calls the user may touch; None: any (no context separation).
    pub context: Option<String>,
    pub role: Role,
}

impl Disposer {
    /// The agent who handled a call (answered as its agent, or on its line); a supervisor
    /// of one of its contexts; an admin.
    pub fn may_dispose(
        &self,
        contexts: &[String],
        agent_login: Option<&str>,
        lines: &[String],
    ) -> bool {
        let reach = self.role.reach();
        let in_context = reach == Reach::Any
            || self
                .context
                .as_ref()
                .is_none_or(|own| contexts.contains(own));
        let handled = agent_login == Some(self.login.as_str())
            || self.line.as_ref().is_some_and(|l| lines.contains(l));
        in_context && (handled || reach >= Reach::Context)
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

    fn who(login: &str, line: Option<&str>, context: Option<&str>, role: Role) -> Disposer {
        Disposer {
            login: login.into(),
            line: line.map(str::to_owned),
            context: context.map(str::to_owned),
            role,
        }
    }

    #[test]
    fn the_handling_agent_a_supervisor_of_the_context_or_an_admin_may_dispose() {
        let contexts = ["a".to_owned()];
        let lines = ["PJSIP/1002".to_owned()];
        let may = |d: Disposer| d.may_dispose(&contexts, Some("alice"), &lines);
        let (agent, supervisor, admin) = (Role::Agent, Role::Supervisor, Role::Admin);
        assert!(may(who("alice", None, Some("a"), agent)), "the agent");
        assert!(
            may(who("bob", Some("PJSIP/1002"), Some("a"), agent)),
            "on its line"
        );
        assert!(may(who("carol", None, Some("a"), supervisor)));
        assert!(!may(who("dave", None, Some("a"), agent)), "another agent");
        assert!(
            !may(who("alice", None, Some("b"), agent)),
            "another context"
        );
        assert!(
            !may(who("erin", None, Some("b"), supervisor)),
            "another context's supervisor"
        );
        assert!(may(who("tool", None, Some("b"), admin)), "an admin");
        assert!(may(who("alice", None, None, agent)), "no separation");
    }

    #[test]
    fn roles_reach_further_in_order() {
        assert_eq!(Role::default(), Role::Agent);
        assert!(Role::Agent.reach() < Role::Supervisor.reach());
        assert!(Role::Supervisor.reach() < Role::Admin.reach());
        assert_eq!(scope(Target::OwnLine, Role::Admin), "own line");
        assert_eq!(
            scope(Target::Call, Role::Supervisor),
            "calls of the context"
        );
    }
}
