//! The client library against a real server process.

use dfs::client::{Client, ClientError};

use crate::util::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_through_the_library() {
    let s = Server::start();
    let c = Client::connect([s.addr()]).await.expect("connect");
    let info = c.create("lib/a").await.expect("create");
    assert_eq!((info.size, info.version), (0, 0));
    assert!(matches!(
        c.create("lib/a").await,
        Err(ClientError::AlreadyExists(_))
    ));
    for (name, rule) in [
        ("../a", "'..'"),
        ("/a", "must not start with '/'"),
        ("a//b", "no empty segment"),
        (".", "'.'"),
        ("a\u{0}b", "control characters"),
    ] {
        match c.append(name, "x").await {
            Err(e @ ClientError::InvalidName(_)) => assert!(e.to_string().contains(rule), "{e}"),
            other => panic!("{name:?}: expected InvalidName, got {other:?}"),
        }
    }
    let long = "a".repeat(1025);
    assert!(matches!(
        c.stat(&long).await,
        Err(ClientError::InvalidName(_))
    ));
    let names: Vec<_> = c
        .list("")
        .await
        .expect("list")
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["lib/a"], "a refused write created something");
    c.append("lib/a", "one,").await.expect("append");
    c.append("lib/a", "two").await.expect("append");
    assert_eq!(
        &c.read("lib/a", 0, None).await.expect("read")[..],
        b"one,two"
    );
    c.put("lib/a", "replaced").await.expect("put");
    assert_eq!(
        &c.read("lib/a", 2, Some(4)).await.expect("read")[..],
        b"plac"
    );
    let st = c.stat("lib/a").await.expect("stat");
    assert_eq!((st.size, st.version, st.replicas), (8, 3, vec![1]));
    let ls = c.list("lib/").await.expect("list");
    assert_eq!(ls.len(), 1);
    assert_eq!(c.table().await.expect("table")[0].name, "lib/a");
    assert_eq!(c.status().await.expect("status").leader, Some(1));
    c.delete("lib/a").await.expect("delete");
    assert!(matches!(
        c.stat("lib/a").await,
        Err(ClientError::NotFound(_))
    ));
    assert!(matches!(
        c.delete("lib/a").await,
        Err(ClientError::NotFound(_))
    ));
    // What the library wrote, the CLI reads.
    c.append("shared", "from the library")
        .await
        .expect("append");
    let cli = s.cli(&["read", "shared"]);
    assert_eq!(ok(&cli), "from the library");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_library_fails_over_to_a_live_server() {
    let s = Server::start();
    // The first address has nothing listening: the client moves on to the next.
    let dead = format!("127.0.0.1:{}", free_port());
    let c = Client::connect([dead, s.addr()])
        .await
        .expect("connect skips the dead node");
    for _ in 0..5 {
        c.append("f", "x").await.expect("append");
    }
    assert_eq!(c.stat("f").await.expect("stat").size, 5);
}
