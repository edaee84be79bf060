//! The directory file is reloaded when it changes; a broken version is refused.

mod common;

use common::{ami_config_with, test_hash, two_tenants, Cti, Ctid};
use ctid_pbxsim::{PbxSim, SimConfig};
use serde_json::json;

#[tokio::test]
async fn a_changed_directory_is_reloaded_and_a_broken_one_refused() {
    let sim = PbxSim::start(SimConfig::default()).await.unwrap();
    let config = ami_config_with(sim.addr().port(), "secret = \"ctipass\"", &["cti"]);
    let ctid = Ctid::start(&config, "info");
    let port = ctid.port("cti").await;
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
