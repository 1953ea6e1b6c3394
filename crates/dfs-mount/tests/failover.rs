//! Programs using the mount keep going while a node of the cluster goes away.
//! Skipped (with a message) where `/dev/fuse` is missing.

use std::fs;
use std::io::Write;
use std::net::TcpListener;
use std::path::Path;

use dfs_client::{Client, ClientConfig};
use dfs_mount::MountOptions;
use dfs_node::{Member, Node, NodeConfig};
use futures::future::join_all;

type TestResult = Result<(), Box<dyn std::error::Error>>;

#[test]
fn mount_keeps_working_when_a_node_goes_away() -> TestResult {
    if !Path::new("/dev/fuse").exists() {
        eprintln!("SKIPPED: /dev/fuse is missing, so nothing can be mounted here");
        return Ok(());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()?;
    let data = tempfile::tempdir()?;
    // Three nodes started together (each waits for a leader), kept apart so one can
    // be stopped alone.
    let listeners = (0..3)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()?;
    let members = listeners
        .iter()
        .zip(1..)
        .map(|(l, id)| {
            Ok(Member {
                id,
                addr: l.local_addr()?.to_string(),
            })
        })
        .collect::<Result<Vec<_>, std::io::Error>>()?;
    drop(listeners);
    let configs = members.iter().map(|m| {
        let mut config = NodeConfig::new(
            m.id,
            members.clone(),
            data.path().join(format!("node-{}", m.id)),
        );
        config.replication_factor = Some(2);
        config
    });
    let mut nodes: Vec<Node> = rt
        .block_on(join_all(configs.map(Node::start)))
        .into_iter()
        .collect::<Result<_, _>>()?;
    let addrs: Vec<String> = members.iter().map(|m| m.addr.clone()).collect();
    let client = rt.block_on(Client::with_config(ClientConfig::new(addrs)))?;

    let mnt = tempfile::tempdir()?;
    let mount = dfs_mount::mount(
        client.clone(),
        rt.handle().clone(),
        mnt.path(),
        MountOptions::default(),
    )?;
    let dir = mnt.path().join("work");
    fs::create_dir(&dir)?;
    for i in 0..10 {
        fs::write(dir.join(format!("before-{i}")), format!("before {i}"))?;
    }

    // Stop the node the files' writes are most likely to go through: node 1.
    let stopped = nodes.remove(0);
    rt.block_on(stopped.shutdown());

    // Every file is still readable, writable and listable through the mount.
    for i in 0..10 {
        let path = dir.join(format!("before-{i}"));
        assert_eq!(fs::read_to_string(&path)?, format!("before {i}"));
        let mut f = fs::OpenOptions::new().append(true).open(&path)?;
        f.write_all(b" and after")?;
        f.sync_all()?;
    }
    for i in 0..10 {
        fs::write(dir.join(format!("after-{i}")), format!("after {i}"))?;
    }
    let mut names: Vec<String> = fs::read_dir(&dir)?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    names.sort();
    assert_eq!(names.len(), 20);
    for i in 0..10 {
        let got = rt.block_on(client.read(&format!("work/before-{i}"), 0, None))?;
        assert_eq!(&got[..], format!("before {i} and after").as_bytes());
    }
    mount.unmount()?;
    rt.block_on(join_all(nodes.into_iter().map(Node::shutdown)));
    Ok(())
}
