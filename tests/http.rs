//! The HTTP API through real sockets: the real ctid binary, the simulated PBX, and an HTTP
//! client with the test tokens of `common::TOKENS`.

mod common;

use common::{ami_config_with, http_tokens, Ctid, Http};
use ctid_pbxsim::{PbxSim, SimConfig};
use serde_json::json;

const ADMIN: &str = "admin-token";

struct Server {
    sim: PbxSim,
    ctid: Ctid,
    http: Http,
}

async fn server() -> Server {
    let sim = PbxSim::start(SimConfig::default()).await.unwrap();
    let config = ami_config_with(sim.addr().port(), "secret = \"ctipass\"", &["http"]);
    let ctid = Ctid::start(&(config + &http_tokens()), "info");
    let http = Http::new(ctid.port("http").await);
    ctid.wait_line("resynced with Asterisk").await;
    Server { sim, ctid, http }
}

#[tokio::test]
async fn pbxes_are_listed_with_the_state_of_their_link() {
    let s = server().await;
    let (status, body) = s.http.call("GET", "/api/v1/pbxes", Some(ADMIN), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"pbxes": [{"name": "default", "state": "up"}]}));
    drop(s.sim);
}

#[tokio::test]
async fn no_token_or_a_wrong_one_is_401_and_unknown_routes_404_in_json() {
    let s = server().await;
    for token in [None, Some("wrong"), Some("")] {
        let (status, body) = s.http.call("GET", "/api/v1/pbxes", token, None).await;
        assert_eq!(status, 401, "{token:?}");
        assert_eq!(body["error"], "unauthorized");
    }
    let (status, body) = s
        .http
        .call("GET", "/api/v1/nothing", Some(ADMIN), None)
        .await;
    assert_eq!((status, &body["error"]), (404, &json!("not_found")));
    let (status, body) = s
        .http
        .call("PATCH", "/api/v1/pbxes", Some(ADMIN), None)
        .await;
    assert_eq!((status, &body["error"]), (405, &json!("unknown_function")));
    assert_eq!(s.ctid.count("wrong"), 0, "tokens are never logged");
}
