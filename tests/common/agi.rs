//! Asterisk's side of a FastAGI connection, for tests.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::fixture;

/// The request of fixtures/agi/fastagi_basic.txt (channel 1795348247.39 of call
/// 1795348247.38, dialplan context `default`), for another script and caller.
pub fn request(script: &str, callerid: &str, calleridname: &str) -> String {
    let recorded = String::from_utf8(fixture("agi/fastagi_basic.txt")).unwrap();
    let header: String = recorded.split("\n\n").next().unwrap().to_owned();
    header
        .replace(
            "agi_network_script: incoming?x=y",
            &format!("agi_network_script: {script}"),
        )
        .replace(
            "agi_callerid: 2025550100",
            &format!("agi_callerid: {callerid}"),
        )
        .replace(
            "agi_calleridname: Bob",
            &format!("agi_calleridname: {calleridname}"),
        )
        + "\n\n"
}

/// Answers ctid's commands as Asterisk would; returns them. `before_reply` lines are sent
/// right after the request (a HANGUP, say).
pub async fn agi(port: u16, request: &str, before_reply: &str) -> Vec<String> {
    agi_from([127, 0, 0, 1], port, request, before_reply).await
}

/// [`agi`] from source address `from` (another loopback address, say).
pub async fn agi_from(from: [u8; 4], port: u16, request: &str, before_reply: &str) -> Vec<String> {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind((from, 0).into()).unwrap();
    let stream = socket.connect(([127, 0, 0, 1], port).into()).await.unwrap();
    let (read, mut write) = stream.into_split();
    write.write_all(request.as_bytes()).await.unwrap();
    write.write_all(before_reply.as_bytes()).await.unwrap();
    let mut lines = BufReader::new(read).lines();
    let mut commands = Vec::new();
    loop {
        let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .expect("ctid hung");
        let Ok(Some(command)) = line else {
            return commands;
        };
        let reply = if command.starts_with("GET FULL VARIABLE ${CHANNEL(linkedid)}") {
            "200 result=1 (1795348247.38)\n"
        } else {
            "200 result=1\n"
        };
        commands.push(command);
        write.write_all(reply.as_bytes()).await.unwrap();
    }
}
