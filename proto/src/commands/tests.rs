use super::*;
use crate::ami::AmiMessage;
use crate::directory::DEFAULT_PBX;

const PW: &str =
        "$argon2id$v=19$m=19456,t=2,p=1$PmUfvJSx/XoaiPI5CGZKyQ$widnLdjpam9VZ0OVSdxdkHJkTCIH1RSgZ5vw0n8DyHo";

fn dir() -> Directory {
    Directory::parse(&format!(
            "[[contexts]]\nname = \"a\"\ndialplan = [\"a-in\"]\n[[contexts]]\nname = \"b\"\ndialplan = [\"b-in\"]\n\
             [[queues]]\nname = \"qa\"\ncontext = \"a\"\n[[queues]]\nname = \"qb\"\ncontext = \"b\"\n\
             [[users]]\nid = 1\nlogin = \"alice\"\npassword = \"{PW}\"\nfirstname = \"Alice\"\n\
             line = {{ interface = \"PJSIP/1001\", number = \"1001\", context = \"a\", dialplan = \"a-in\" }}\n\
             [[users]]\nid = 2\nlogin = \"bob\"\npassword = \"{PW}\"\n\
             line = {{ interface = \"PJSIP/1002\", number = \"1002\", context = \"a\", dialplan = \"a-in\" }}\n\
             [[users]]\nid = 3\nlogin = \"dave\"\npassword = \"{PW}\"\n\
             line = {{ interface = \"PJSIP/2001\", number = \"2001\", context = \"b\", dialplan = \"b-in\" }}\n\
             [[users]]\nid = 4\nlogin = \"erin\"\npassword = \"{PW}\"\n\
             [[users]]\nid = 5\nlogin = \"carol\"\npassword = \"{PW}\"\nrole = \"supervisor\"\n\
             line = {{ interface = \"PJSIP/1003\", number = \"1003\", context = \"a\", dialplan = \"a-in\" }}\n\
             [[users]]\nid = 6\nlogin = \"tool\"\npassword = \"{PW}\"\nrole = \"admin\"\n\
             [[users]]\nid = 7\nlogin = \"boss\"\npassword = \"{PW}\"\nsupervisor = true\n\
             line = {{ interface = \"PJSIP/2002\", number = \"2002\", context = \"b\", dialplan = \"b-in\" }}\n"
        ))
        .unwrap()
}

/// A bridged call from 1001 to 1002, id "5.1".
fn model(dir: &Directory) -> CallModel {
    let mut m = CallModel::new(DEFAULT_PBX);
    let chan = |name: &str, uid: &str, state: u8| {
        format!("Channel: {name}\r\nUniqueid: {uid}\r\nLinkedid: 5.1\r\nChannelState: {state}\r\nContext: a-in\r\nExten: 1002\r\n")
    };
    for ev in [
        format!(
            "Event: Newchannel\r\n{}",
            chan("PJSIP/1001-00000001", "5.1", 6)
        ),
        format!(
            "Event: Newchannel\r\n{}",
            chan("PJSIP/1002-00000002", "5.2", 6)
        ),
        format!(
            "Event: BridgeEnter\r\nBridgeUniqueid: br\r\n{}",
            chan("PJSIP/1001-00000001", "5.1", 6)
        ),
        format!(
            "Event: BridgeEnter\r\nBridgeUniqueid: br\r\n{}",
            chan("PJSIP/1002-00000002", "5.2", 6)
        ),
    ] {
        m.apply(&AmiMessage::parse(&ev), 1.0, dir);
    }
    m
}

fn run(login: &str, json: &str, separated: bool) -> Result<Plan, ErrorCode> {
    let dir = dir();
    let model = model(&dir);
    let user = dir.user_by_login(login).unwrap();
    let partition = if separated { user.context() } else { Some("*") };
    let sender = Sender {
        user,
        partition,
        separated,
    };
    plan(
        &Request::parse(json.as_bytes()).unwrap(),
        &sender,
        &dir,
        &model,
        &CommandSettings::default(),
    )
}

/// What a command of `login`, with context separation, sends to Asterisk.
fn sent(login: &str, json: &str) -> Vec<String> {
    wire(&run(login, json, true).unwrap())
}

fn wire(plan: &Plan) -> Vec<String> {
    plan.steps
        .iter()
        .map(|s| {
            String::from_utf8(s.packet.to_bytes().to_vec())
                .unwrap()
                .replace("\r\n", "|")
        })
        .collect()
}

#[test]
fn dial_originates_from_the_users_own_line() {
    let p = run(
        "alice",
        r#"{"class":"ipbxcommand","command":"dial","destination":"1002"}"#,
        true,
    )
    .unwrap();
    assert_eq!(
            wire(&p),
            ["Action: Originate|Channel: PJSIP/1001|Context: a-in|Exten: 1002|Priority: 1|CallerID: \"Alice\" <1001>|Timeout: 30000|Async: true||"]
        );
    assert_eq!(p.steps[0].wait, Wait::Event("OriginateResponse"));
}

#[test]
fn destinations_that_could_inject_are_refused() {
    for bad in ["", "10 02", "1002\r\nAction: Logoff", "1002;x", "1002,1"] {
        let json = serde_json::json!({"class":"ipbxcommand","command":"dial","destination": bad})
            .to_string();
        assert_eq!(
            run("alice", &json, true).unwrap_err(),
            ErrorCode::Invalid("destination".into()),
            "{bad:?}"
        );
    }
}

#[test]
fn a_line_break_in_any_field_is_refused_by_name() {
    assert_eq!(
        run(
            "alice",
            r#"{"class":"ipbxcommand","command":"agentpause","reason":"lunch\r\nAction: Logoff"}"#,
            true
        )
        .unwrap_err(),
        ErrorCode::Invalid("reason".into())
    );
}

#[test]
fn a_user_acts_only_within_their_context() {
    let hangup = r#"{"class":"ipbxcommand","command":"hangup","call_id":"default:5.1"}"#;
    assert_eq!(wire(&run("bob", hangup, true).unwrap()).len(), 2);
    assert_eq!(run("dave", hangup, true).unwrap_err(), ErrorCode::Unallowed);
    assert_eq!(
        run(
            "dave",
            r#"{"class":"ipbxcommand","command":"hangup","call_id":"nope"}"#,
            true
        )
        .unwrap_err(),
        ErrorCode::Unallowed
    );
    assert!(
        run("boss", hangup, false).is_ok(),
        "without separation every context is open (to a supervisor)"
    );
    assert_eq!(
        run("dave", hangup, false).unwrap_err(),
        ErrorCode::Unallowed,
        "an agent acts on their own calls only, separation or not"
    );
    // Erin has no line: nothing at all.
    assert_eq!(
        run(
            "erin",
            r#"{"class":"ipbxcommand","command":"dial","destination":"1"}"#,
            true
        )
        .unwrap_err(),
        ErrorCode::Unallowed
    );
    // Originate from another context's line, or queue actions on another context's queue.
    assert_eq!(
        run(
            "alice",
            r#"{"class":"ipbxcommand","command":"originate","source":"2001","destination":"1"}"#,
            true
        )
        .unwrap_err(),
        ErrorCode::Unallowed
    );
    assert_eq!(
        run(
            "alice",
            r#"{"class":"ipbxcommand","command":"queueadd","queue":"qb","member":"1001"}"#,
            true
        )
        .unwrap_err(),
        ErrorCode::Unallowed
    );
    assert_eq!(
        run(
            "alice",
            r#"{"class":"ipbxcommand","command":"queueadd","queue":"qa","member":"2001"}"#,
            true
        )
        .unwrap_err(),
        ErrorCode::Unallowed
    );
}

#[test]
fn transfers_act_on_the_users_own_channel() {
    let p = sent(
        "bob",
        r#"{"class":"ipbxcommand","command":"transfer","call_id":"default:5.1","destination":"1003"}"#,
    );
    assert_eq!(
        p,
        ["Action: BlindTransfer|Channel: PJSIP/1002-00000002|Context: a-in|Exten: 1003||"]
    );
    let p = sent(
        "bob",
        r#"{"class":"ipbxcommand","command":"atxfer","call_id":"default:5.1","destination":"1003"}"#,
    );
    assert!(p[0].starts_with("Action: Atxfer|Channel: PJSIP/1002-00000002|"));
    let p = sent(
        "bob",
        r#"{"class":"ipbxcommand","command":"atxfer_cancel","call_id":"default:5.1"}"#,
    );
    assert_eq!(p, ["Action: CancelAtxfer|Channel: PJSIP/1002-00000002||"]);
    // Park sends the other party to the parking lot; it comes back to bob.
    let park = sent(
        "bob",
        r#"{"class":"ipbxcommand","command":"park","call_id":"default:5.1"}"#,
    );
    assert_eq!(
        park,
        ["Action: Park|Channel: PJSIP/1001-00000001|TimeoutChannel: PJSIP/1002-00000002||"]
    );
}

#[test]
fn hold_redirects_both_parties_and_resume_bridges_them() {
    let p = sent(
        "alice",
        r#"{"class":"ipbxcommand","command":"hold","call_id":"default:5.1"}"#,
    );
    assert_eq!(
            p,
            ["Action: Redirect|Channel: PJSIP/1002-00000002|Context: ctid-hold|Exten: hold|Priority: 1|ExtraChannel: PJSIP/1001-00000001|ExtraContext: ctid-hold|ExtraExten: wait|ExtraPriority: 1||"]
        );
    let p = sent(
        "alice",
        r#"{"class":"ipbxcommand","command":"resume","call_id":"default:5.1"}"#,
    );
    assert_eq!(
        p,
        ["Action: Bridge|Channel1: PJSIP/1001-00000001|Channel2: PJSIP/1002-00000002|Tone: no||"]
    );
}

#[test]
fn agent_and_queue_actions() {
    let p = sent("alice", r#"{"class":"ipbxcommand","command":"agentlogin"}"#);
    assert_eq!(
        p,
        ["Action: QueueAdd|Queue: qa|Interface: PJSIP/1001|MemberName: Alice||"]
    );
    let p = sent(
        "alice",
        r#"{"class":"ipbxcommand","command":"agentpause","reason":"lunch"}"#,
    );
    assert_eq!(
        p,
        ["Action: QueuePause|Interface: PJSIP/1001|Paused: true|Reason: lunch||"]
    );
    let p = sent(
        "carol",
        r#"{"class":"ipbxcommand","command":"queuepause","queue":"qa","member":"1002","paused":false}"#,
    );
    assert_eq!(
        p,
        ["Action: QueuePause|Queue: qa|Interface: PJSIP/1002|Paused: false||"]
    );
    assert_eq!(
        run(
            "alice",
            r#"{"class":"ipbxcommand","command":"agentlogin","queues":["qb"]}"#,
            true
        )
        .unwrap_err(),
        ErrorCode::Unallowed
    );
}

#[test]
fn queueunpause_is_a_pause_set_to_false() {
    let p = sent(
        "carol",
        r#"{"class":"ipbxcommand","command":"queueunpause","queue":"qa","member":"1002"}"#,
    );
    assert_eq!(
        p,
        ["Action: QueuePause|Queue: qa|Interface: PJSIP/1002|Paused: false||"]
    );
}

#[test]
fn unknown_commands_and_missing_fields() {
    assert_eq!(
        run("alice", r#"{"class":"ipbxcommand","command":"fly"}"#, true).unwrap_err(),
        ErrorCode::UnknownFunction
    );
    assert_eq!(
        run("alice", r#"{"class":"ipbxcommand"}"#, true).unwrap_err(),
        ErrorCode::Missing(vec!["command".into()])
    );
    assert_eq!(
        run(
            "alice",
            r#"{"class":"ipbxcommand","command":"hangup"}"#,
            true
        )
        .unwrap_err(),
        ErrorCode::Missing(vec!["call_id".into()])
    );
    assert_eq!(run("alice", r#"{"class":"ipbxcommand","command":"record","call_id":"default:5.1","subcommand":"pause"}"#, true).unwrap_err(), ErrorCode::Invalid("subcommand".into()));
}

#[test]
fn an_agent_acts_on_their_own_line_and_calls_only() {
    // Carol's call? No: 5.1 is alice's and bob's; a third agent of the context is out.
    let dir = dir();
    let mut model = model(&dir);
    let ring = "Event: Newchannel\r\nChannel: PJSIP/1003-00000009\r\nUniqueid: 6.1\r\n\
                    Linkedid: 6.1\r\nChannelState: 5\r\nContext: a-in\r\nExten: 1003\r\n";
    model.apply(&AmiMessage::parse(ring), 2.0, &dir);
    let plan_for = |login: &str, json: &str| {
        let user = dir.user_by_login(login).unwrap();
        let sender = Sender {
            user,
            partition: user.context(),
            separated: true,
        };
        plan(
            &Request::parse(json.as_bytes()).unwrap(),
            &sender,
            &dir,
            &model,
            &CommandSettings::default(),
        )
    };
    for json in [
        r#"{"class":"ipbxcommand","command":"hangup","call_id":"default:6.1"}"#,
        r#"{"class":"ipbxcommand","command":"pickup","call_id":"default:6.1"}"#,
        r#"{"class":"ipbxcommand","command":"originate","source":"1003","destination":"1"}"#,
        r#"{"class":"ipbxcommand","command":"queueadd","queue":"qa","member":"1003"}"#,
    ] {
        assert_eq!(
            plan_for("alice", json).unwrap_err(),
            ErrorCode::Unallowed,
            "{json}"
        );
    }
    assert!(plan_for(
        "alice",
        r#"{"class":"ipbxcommand","command":"originate","source":"1001","destination":"1"}"#
    )
    .is_ok());
    assert!(plan_for(
        "alice",
        r#"{"class":"ipbxcommand","command":"queueadd","queue":"qa","member":"1001"}"#
    )
    .is_ok());
    assert!(
        plan_for(
            "carol",
            r#"{"class":"ipbxcommand","command":"pickup","call_id":"default:5.1"}"#
        )
        .is_err(),
        "not ringing"
    );
    assert!(plan_for(
        "bob",
        r#"{"class":"ipbxcommand","command":"pickup","call_id":"default:6.1"}"#
    )
    .is_err());
    assert!(
        plan_for(
            "carol",
            r#"{"class":"ipbxcommand","command":"hangup","call_id":"default:6.1"}"#
        )
        .is_ok(),
        "her own"
    );
}

#[test]
fn a_supervisor_acts_as_the_agents_leg_of_a_colleagues_call() {
    let p = sent(
        "carol",
        r#"{"class":"ipbxcommand","command":"transfer","call_id":"default:5.1","destination":"1009"}"#,
    );
    // The bridged leg of a line of the context: alice's (first by Uniqueid).
    assert_eq!(
        p,
        ["Action: BlindTransfer|Channel: PJSIP/1001-00000001|Context: a-in|Exten: 1009||"]
    );
    assert_eq!(
        sent(
            "carol",
            r#"{"class":"ipbxcommand","command":"hangup","call_id":"default:5.1"}"#
        )
        .len(),
        2
    );
    assert_eq!(
        run(
            "boss",
            r#"{"class":"ipbxcommand","command":"hangup","call_id":"default:5.1"}"#,
            true
        )
        .unwrap_err(),
        ErrorCode::Unallowed,
        "a supervisor of another context"
    );
}

#[test]
fn an_admin_reaches_every_context_even_with_separation_and_without_a_line() {
    let hangup = r#"{"class":"ipbxcommand","command":"hangup","call_id":"default:5.1"}"#;
    assert_eq!(wire(&run("tool", hangup, true).unwrap()).len(), 2);
    assert!(run(
        "tool",
        r#"{"class":"ipbxcommand","command":"originate","source":"2001","destination":"1"}"#,
        true
    )
    .is_ok());
    assert!(run(
        "tool",
        r#"{"class":"ipbxcommand","command":"queueadd","queue":"qb","member":"2001"}"#,
        true
    )
    .is_ok());
    assert_eq!(
        run(
            "tool",
            r#"{"class":"ipbxcommand","command":"dial","destination":"1"}"#,
            true
        )
        .unwrap_err(),
        ErrorCode::Unallowed,
        "no line of its own to dial from"
    );
}

/// docs/protocol.md's table of command × role, row by row, from the rights table.
#[test]
fn the_documented_command_by_role_table_is_the_rights_table() {
    use crate::rights::{scope, ROLES};
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/protocol.md");
    let doc = std::fs::read_to_string(path).unwrap();
    let header = "| command | agent | supervisor | admin |";
    let rows: Vec<String> = doc
        .lines()
        .skip_while(|l| *l != header)
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(str::to_owned)
        .collect();
    let expected: Vec<String> = targets()
        .chain([("disposition", DISPOSITION_TARGET)])
        .map(|(name, target)| {
            let cells: Vec<&str> = ROLES.iter().map(|(role, _)| scope(target, *role)).collect();
            format!("| `{name}` | {} |", cells.join(" | "))
        })
        .collect();
    assert_eq!(rows, expected, "docs/protocol.md, under {header:?}");
}
