use super::*;

/// argon2id of "secret", at the weakest cost accepted.
pub const SECRET: &str =
        "$argon2id$v=19$m=19456,t=2,p=1$PmUfvJSx/XoaiPI5CGZKyQ$widnLdjpam9VZ0OVSdxdkHJkTCIH1RSgZ5vw0n8DyHo";

fn sample() -> String {
    format!(
        r#"
[[contexts]]
name = "default"
dialplan = ["default", "internal"]
[[contexts]]
name = "tenant-b"
dialplan = ["tenant-b"]
[[users]]
id = 1
login = "alice"
password = "{SECRET}"
firstname = "Alice"
lastname = "Martin"
line = {{ interface = "PJSIP/1001", number = "1001", context = "default", dialplan = "internal" }}
[[users]]
id = 2
login = "nobody"
password = "{SECRET}"
[[queues]]
name = "support"
context = "default"
"#
    )
}

#[test]
fn parses_and_indexes() {
    let dir = Directory::parse(&sample()).unwrap();
    let alice = dir.user_by_login("alice").unwrap();
    assert_eq!(alice.fullname(), "Alice Martin");
    assert_eq!(alice.context(), Some("default"));
    assert_eq!(
        dir.user_by_interface("default", "PJSIP/1001").unwrap().id,
        1
    );
    assert_eq!(dir.user_by_interface("other", "PJSIP/1001"), None);
    assert_eq!(dir.user_by_number("default", "1001").unwrap().id, 1);
    assert_eq!(dir.user_by_login("nobody").unwrap().context(), None);
    assert_eq!(
        dir.context_of_dialplan("default", "internal"),
        Some("default")
    );
    assert_eq!(
        dir.context_of_dialplan("default", "tenant-b"),
        Some("tenant-b")
    );
    assert_eq!(dir.queue("default", "support").unwrap().context, "default");
    assert!(
        !format!("{alice:?}").contains("argon2"),
        "the hash must not be debug-printed"
    );
}

fn line(pbx: &str, interface: &str, context: &str) -> String {
    let pbx = if pbx.is_empty() {
        String::new()
    } else {
        format!(", pbx = \"{pbx}\"")
    };
    format!("line = {{ interface = \"{interface}\", number = \"1\", context = \"{context}\", dialplan = \"d\"{pbx} }}\n")
}

#[test]
fn lines_and_queues_belong_to_a_pbx() {
    let two = ["a".to_owned(), "b".to_owned()];
    let contexts = "[[contexts]]\nname = \"t1\"\ndialplan = [\"in\", \"b:trunk\"]\n\
                        [[contexts]]\nname = \"t2\"\ndialplan = [\"a:trunk\"]\n";
    let user = |id: u32, line: String| {
        format!("[[users]]\nid = {id}\nlogin = \"u{id}\"\npassword = \"{SECRET}\"\n{line}")
    };
    // The same interface on two PBXes, in two contexts: two lines.
    let text = format!(
        "{contexts}{}{}[[queues]]\nname = \"q\"\ncontext = \"t1\"\npbx = \"b\"\n",
        user(1, line("a", "PJSIP/1", "t1")),
        user(2, line("b", "PJSIP/1", "t2")),
    );
    let dir = Directory::parse_for(&text, &two).unwrap();
    assert_eq!(dir.user_by_interface("a", "PJSIP/1").unwrap().id, 1);
    assert_eq!(dir.user_by_interface("b", "PJSIP/1").unwrap().id, 2);
    assert!(dir.queue("b", "q").is_some() && dir.queue("a", "q").is_none());
    // A dialplan entry may be scoped to one PBX.
    assert_eq!(dir.context_of_dialplan("b", "trunk"), Some("t1"));
    assert_eq!(dir.context_of_dialplan("a", "trunk"), Some("t2"));
    assert_eq!(dir.context_of_dialplan("a", "in"), Some("t1"));
    // One PBX: it may be left out.
    let one = Directory::parse(&format!("{contexts}{}", user(1, line("", "PJSIP/1", "t1"))));
    let one = one.unwrap_err().join("; ");
    assert!(
        one.contains("names PBX \"b\", which is not configured (default)"),
        "{one}"
    );

    let problems = Directory::parse_for(
        &format!(
            "{contexts}{}{}{}",
            user(1, line("", "PJSIP/1", "t1")),
            user(2, line("c", "PJSIP/2", "t1")),
            user(3, line("b", "PJSIP/2", "t1"))
        ),
        &two,
    )
    .unwrap_err();
    assert_eq!(problems.len(), 2, "{problems:#?}");
    assert!(problems[0]
        .contains("users[0] (u1): line.pbx is required: several PBXes are configured (a, b)"));
    assert!(problems[1].contains("users[1] (u2): line.pbx \"c\" is not a configured PBX (a, b)"));
    let clash = Directory::parse_for(
        &format!(
            "{contexts}{}{}",
            user(1, line("a", "PJSIP/1", "t1")),
            user(2, line("b", "PJSIP/1", "t1"))
        ),
        &two,
    )
    .unwrap_err();
    assert!(
        clash[0].contains("context \"t1\" has a line \"PJSIP/1\" on PBX \"a\" already"),
        "{clash:?}"
    );
}

#[test]
fn every_problem_is_reported() {
    let text = r#"
[[contexts]]
name = "a"
dialplan = ["x"]
[[contexts]]
name = "b"
dialplan = ["x"]
[[users]]
id = 1
login = "u"
password = "plain"
line = { interface = "PJSIP/1", number = "1", context = "nowhere", dialplan = "x" }
[[users]]
id = 1
login = "u"
password = "plain"
[[queues]]
name = "q"
context = "c"
"#;
    let problems = Directory::parse(text).unwrap_err();
    assert_eq!(problems.len(), 6, "{problems:#?}");
    assert!(problems[0].contains("dialplan context \"x\" already belongs to context \"a\""));
    assert!(problems
        .iter()
        .any(|p| p.contains("line.context \"nowhere\"")));
    assert!(problems.iter().any(|p| p.contains("user id defined twice")));
    assert!(problems
        .iter()
        .any(|p| p.contains("queues[0] (q): context \"c\"")));
}

#[test]
fn json_has_the_shape_of_the_file() {
    let json = format!(
        r#"{{"contexts":[{{"name":"a","dialplan":["a"]}}],"users":[{{"id":1,"login":"x","password":"{SECRET}","line":{{"interface":"PJSIP/1","number":"1","context":"a","dialplan":"a"}}}}]}}"#
    );
    assert_eq!(
        Directory::parse_json(&json, &[DEFAULT_PBX.to_owned()])
            .unwrap()
            .user(1)
            .unwrap()
            .context(),
        Some("a")
    );
    let pbxes = [DEFAULT_PBX.to_owned()];
    assert!(Directory::parse_json(r#"{"users":[{"id":1,"login":"x","password":"p","line":{"interface":"i","number":"1","context":"nowhere","dialplan":"d"}}]}"#, &pbxes).is_err());
    assert!(Directory::parse_json("[", &pbxes).is_err());
}

#[test]
fn unknown_fields_and_bad_toml_are_one_clear_line() {
    let problems =
        Directory::parse("[[users]]\nid = 1\nlogin = \"a\"\npassword = \"x\"\nmail = 1\n")
            .unwrap_err();
    assert!(problems[0].contains("unknown field `mail`"), "{problems:?}");
    assert!(problems[0].starts_with("line 5: "), "{problems:?}");
    assert!(!problems[0].contains('\n'));
}

#[test]
fn a_toml_error_never_quotes_the_line_it_is_on() {
    let problems =
        Directory::parse("[[users]]\nid = 1\npassword = \"hunter2\nlogin = \"a\"\n").unwrap_err();
    assert!(problems[0].starts_with("line 3: "), "{problems:?}");
    assert!(!problems[0].contains("hunter2"), "{problems:?}");
}

#[test]
fn passwords_verify() {
    assert!(verify_password(SECRET, "secret"));
    assert!(!verify_password(SECRET, "Secret"));
    assert!(!verify_password("not a hash", "secret"));
    let phc = hash_password("pw", &[7; 16]).unwrap();
    assert!(phc.starts_with("$argon2id$"));
    assert!(verify_password(&phc, "pw"));
}

#[test]
fn interfaces_of_channels() {
    assert_eq!(interface_of("PJSIP/1001-0000002a"), "PJSIP/1001");
    assert_eq!(
        interface_of("Local/1001@default-00000001;1"),
        "Local/1001@default"
    );
    assert_eq!(
        interface_of("Local/1001@default-00000001;2"),
        "Local/1001@default"
    );
    assert_eq!(
        interface_of("PJSIP/trunk-provider-0000001a"),
        "PJSIP/trunk-provider"
    );
    assert_eq!(interface_of("PJSIP/alice"), "PJSIP/alice");
    assert_eq!(interface_of("Local/1001@default"), "Local/1001@default");
}

#[test]
fn hashes_too_weak_or_too_costly_are_refused_naming_their_line() {
    let weak =
        "$argon2id$v=19$m=256,t=1,p=1$c2FsdHNhbHRzYWx0$LEoDiKolAdO6CICRtIsNfS7pzASNysREYbKPF9VwGok";
    let huge = SECRET.replace("m=19456,t=2,p=1", "m=4194304,t=2,p=1");
    let argon2i = SECRET.replace("argon2id", "argon2i");
    let text = format!(
        "[[users]]\nid = 1\nlogin = \"a\"\npassword = \"{SECRET}\"\n\
             [[users]]\nid = 2\nlogin = \"b\"\npassword = \"{weak}\"\n\
             [[users]]\nid = 3\nlogin = \"c\"\npassword = \"{huge}\"\n\
             [[users]]\nid = 4\nlogin = \"d\"\npassword = \"{argon2i}\"\n"
    );
    let problems = Directory::parse(&text).unwrap_err();
    assert_eq!(problems.len(), 3, "{problems:#?}");
    assert!(
            problems[0].starts_with("users[1] (b), line 8: password hash m=256,t=1,p=1 is weaker than the minimum m=19456,t=2"),
            "{}",
            problems[0]
        );
    assert!(
        problems[1].starts_with("users[2] (c), line 12: "),
        "{}",
        problems[1]
    );
    assert!(problems[1].contains("past the ceiling m<=262144,t<=10,p<=4"));
    assert!(
        problems[2].contains("not an argon2id (v=19) hash"),
        "{}",
        problems[2]
    );
    assert!(
        problems.iter().all(|p| !p.contains("LEoD")),
        "no hash in a message"
    );
    // The same checks apply to a web service's JSON, without line numbers.
    let json = format!(r#"{{"users":[{{"id":1,"login":"x","password":"{weak}"}}]}}"#);
    let problems = Directory::parse_json(&json, &[DEFAULT_PBX.to_owned()]).unwrap_err();
    assert!(
        problems[0].starts_with("users[0] (x): password hash m=256"),
        "{problems:?}"
    );
    assert!(hash_cost(&SECRET.replace("t=2", "t=11")).is_err());
    assert!(hash_cost(&SECRET.replace("p=1", "p=5")).is_err());
    assert_eq!(hash_cost(SECRET), Ok(MIN_HASH));
}

#[test]
fn roles_are_read_and_supervisor_true_is_a_supervisor() {
    let text = format!(
        "[[users]]\nid = 1\nlogin = \"a\"\npassword = \"{SECRET}\"\n\
             [[users]]\nid = 2\nlogin = \"b\"\npassword = \"{SECRET}\"\nrole = \"supervisor\"\n\
             [[users]]\nid = 3\nlogin = \"c\"\npassword = \"{SECRET}\"\nsupervisor = true\n\
             [[users]]\nid = 4\nlogin = \"d\"\npassword = \"{SECRET}\"\nrole = \"admin\"\n"
    );
    let dir = Directory::parse(&text).unwrap();
    let role = |login: &str| dir.user_by_login(login).unwrap().role;
    assert_eq!(
        [role("a"), role("b"), role("c"), role("d")],
        [Role::Agent, Role::Supervisor, Role::Supervisor, Role::Admin]
    );
    let bad =
        format!("[[users]]\nid = 1\nlogin = \"a\"\npassword = \"{SECRET}\"\nrole = \"root\"\n");
    let problems = Directory::parse(&bad).unwrap_err();
    assert!(
        problems[0].contains("unknown variant `root`"),
        "{problems:?}"
    );
}

#[test]
fn unknown_logins_are_checked_at_the_users_usual_cost() {
    assert!(Directory::default()
        .dummy_hash()
        .contains("$m=19456,t=2,p=1$"));
    let strong = dummy_hash(HashCost {
        m: 32_768,
        t: 3,
        p: 1,
    });
    let text = format!(
        "[[users]]\nid = 1\nlogin = \"a\"\npassword = \"{strong}\"\n\
             [[users]]\nid = 2\nlogin = \"b\"\npassword = \"{strong}\"\n\
             [[users]]\nid = 3\nlogin = \"c\"\npassword = \"{SECRET}\"\n"
    );
    let dir = Directory::parse(&text).unwrap();
    let dummy = dir.dummy_hash();
    assert_eq!(
        hash_cost(dummy),
        Ok(HashCost {
            m: 32_768,
            t: 3,
            p: 1
        })
    );
    assert!(!verify_password(dummy, "") && !verify_password(dummy, "pw"));
}
