//! Bad bytes and floods against a real server process: it keeps serving and never dies.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use dfs::client::Client;

use crate::util::*;

fn send_and_read(addr: &str, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    s.write_all(bytes).expect("write");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_floods_and_http_hurt_nobody_else() {
    let mut s = Server::start();
    let c = Client::connect([s.addr()]).await.expect("connect");
    c.append("f", "before;").await.expect("append");

    let addr = s.addr();
    let answers = tokio::task::spawn_blocking(move || {
        // Under the connections one address may open (256 by default): the probes below
        // come from the same address.
        let mut idle = Vec::new();
        for _ in 0..200 {
            idle.push(TcpStream::connect(&addr).expect("idle connection"));
        }
        let garbage: Vec<u8> = (0..4096u32).map(|i| (i * 31 % 251) as u8).collect();
        let answers = [
            send_and_read(&addr, &garbage),
            send_and_read(&addr, &[0xff, 0xff, 0xff, 0xff, 1, 2, 3]),
            send_and_read(&addr, b"GET / HTTP/1.1\r\nHost: dfs\r\n\r\n"),
            send_and_read(&addr, &[0, 0, 0, 9, 1, 2]),
        ];
        (idle, answers)
    });
    // While the bad connections are open, a well-behaved client is served.
    for i in 0..20 {
        c.append("f", format!("{i};"))
            .await
            .expect("served during the flood");
    }
    let (idle, answers) = answers.await.expect("flood task");
    assert!(
        !answers[0].is_empty(),
        "garbage got an answer (a goodbye) before the close"
    );
    assert!(
        !answers[1].is_empty(),
        "an oversized prefix got an answer before the close"
    );
    assert!(String::from_utf8_lossy(&answers[2]).starts_with("HTTP/1.1 400"));
    drop(idle);
    assert!(s.is_running(), "the server died");
    let text = c.read("f", 0, None).await.expect("read");
    let expected: String = std::iter::once("before;".to_string())
        .chain((0..20).map(|i| format!("{i};")))
        .collect();
    assert_eq!(String::from_utf8_lossy(&text), expected);
}
