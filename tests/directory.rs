//! The directory file is reloaded when it changes; a broken version is refused.

mod common;

use common::{actions_named, ami_config_with, test_hash, two_tenants, Cti, Ctid};
use ctid_pbxsim::{PbxSim, SimConfig};
use serde_json::json;

/// ctid with its CTI port, against a simulated Asterisk; and that port.
async fn server() -> (PbxSim, Ctid, u16) {
    let sim = PbxSim::start(SimConfig::default()).await.unwrap();
    let config = ami_config_with(sim.addr().port(), "secret = \"ctipass\"", &["cti"]);
    let ctid = Ctid::start(&config, "info");
    let port = ctid.port("cti").await;
    (sim, ctid, port)
}

#[tokio::test]
async fn a_changed_directory_is_reloaded_and_a_broken_one_refused() {
    let (_sim, ctid, port) = server().await;
    let path = ctid.dir().join("directory.toml");

    // A new context with a new user.
    let grown = format!(
        "{}[[contexts]]\nname = \"tenant-c\"\ndialplan = [\"tenant-c\"]\n\
         [[users]]\nid = 9\nlogin = \"zoe\"\npassword = \"{}\"\n\
         line = {{ interface = \"PJSIP/3001\", number = \"3001\", context = \"tenant-c\", dialplan = \"tenant-c\" }}\n",
        two_tenants(),
        test_hash("zoe")
    );
    std::fs::write(&path, grown).unwrap();
    ctid.wait_line("3 contexts, 6 users").await;
    ctid.wait_line("ctid/partitions/tenant-c added").await;
    let mut zoe = Cti::connect(port).await;
    assert_eq!(zoe.login("zoe").await["context"], "tenant-c");
    zoe.send(json!({"class": "getlist", "function": "listid", "listname": "users"}))
        .await;
    assert_eq!(zoe.reply().await["list"], json!(["9"]));

    // A broken file is refused whole; the previous directory stays.
    std::fs::write(&path, "[[users]]\nid = \"nine\"\n").unwrap();
    ctid.wait_line("directory not reloaded, keeping the previous one")
        .await;
    let mut again = Cti::connect(port).await;
    assert_eq!(again.login("zoe").await["context"], "tenant-c");
}

#[tokio::test]
async fn sessions_follow_their_users_changes_and_close_when_they_are_gone() {
    let (sim, ctid, port) = server().await;
    ctid.wait_line("logged in as 'cti'").await;
    let (mut alice, mut erin) = (Cti::connect(port).await, Cti::connect(port).await);
    alice.login("alice").await;
    erin.login("erin").await;

    // Alice gets a new phone in the same context; erin (who has no line) is deleted.
    let changed = two_tenants()
        .replace("PJSIP/1001", "PJSIP/1011")
        .replace(
            &format!(
                "[[users]]\nid = 5\nlogin = \"erin\"\npassword = \"{}\"\nfirstname = \"erin\"\nsupervisor = false\n",
                test_hash("erin")
            ),
            "",
        );
    assert!(!changed.contains("erin"));
    std::fs::write(ctid.dir().join("directory.toml"), changed).unwrap();
    ctid.wait_line("2 contexts, 4 users").await;

    let rest = erin.until_closed().await;
    assert_eq!(
        rest.last().map(|m| m["error_string"].clone()),
        Some(json!("user_changed"))
    );
    alice
        .send(json!({"class": "ipbxcommand", "command": "dial", "destination": "1002", "commandid": 1}))
        .await;
    // Past the directory changes pushed to her.
    let ack = loop {
        let m = alice.reply().await;
        if m["replyid"] == 1 {
            break m;
        }
    };
    assert_eq!(ack["ipbxreply"], "sent");
    ctid.wait_until("the Originate", || actions_named(&sim, "Originate") == 1)
        .await;
    let originate = sim
        .actions()
        .into_iter()
        .rev()
        .find(|a| a.get("Action") == Some("Originate"))
        .unwrap();
    assert_eq!(originate.get("Channel"), Some("PJSIP/1011"));
}
