//! A secured cluster of real processes: a cluster secret, access tokens and TLS, all made
//! with `dfs-server`'s own tools, used through the real `dfs-client`.

use std::path::Path;
use std::process::{Command, Output};

use crate::harness::{spawn_flagged, stderr, then_kill, wait_all_up};
use crate::util::client_cmd;

fn server_tool(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_dfs-server"))
        .args(args)
        .output()
        .expect("run dfs-server");
    assert!(
        out.status.success(),
        "dfs-server {args:?}: {}",
        stderr(&out)
    );
    out
}

/// `dfs-server token add NAME --right RIGHT --tokens-file FILE`: the token it prints.
fn add_token(tokens: &Path, name: &str, right: &str) -> String {
    let tokens = tokens.to_str().expect("utf-8 path");
    let out = server_tool(&[
        "token",
        "add",
        name,
        "--right",
        right,
        "--tokens-file",
        tokens,
    ]);
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_owned()
}

#[test]
fn a_cluster_with_a_secret_tokens_and_tls_serves_only_those_who_belong() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let (secret, tokens, certs) = (dir.join("secret"), dir.join("tokens.json"), dir.join("tls"));
    server_tool(&["secret", secret.to_str().expect("utf-8")]);
    let admin = add_token(&tokens, "admin", "read-write");
    let reader = add_token(&tokens, "reader", "read");
    server_tool(&[
        "certs",
        "--dir",
        certs.to_str().expect("utf-8"),
        "--names",
        "127.0.0.1",
    ]);
    let listed = server_tool(&[
        "token",
        "list",
        "--tokens-file",
        tokens.to_str().expect("utf-8"),
    ]);
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    assert!(
        listed.contains("admin\tread-write\t*") && listed.contains("reader\tread\t*"),
        "{listed}"
    );
    assert!(!listed.contains(&admin), "the list never shows a token");

    let path = |p: &Path| p.to_str().expect("utf-8").to_owned();
    let extra: Vec<String> = [
        "--secret-file".to_owned(),
        path(&secret),
        "--tokens-file".to_owned(),
        path(&tokens),
        "--tls-cert".to_owned(),
        path(&certs.join("node.pem")),
        "--tls-key".to_owned(),
        path(&certs.join("node-key.pem")),
        "--tls-ca".to_owned(),
        path(&certs.join("ca.pem")),
    ]
    .into();
    let (mut nodes, servers) = spawn_flagged(dir, 2, &extra);
    let ca = path(&certs.join("ca.pem"));
    let client = |token: Option<&str>, tls: bool, args: &[&str]| {
        let mut cmd = client_cmd(&servers);
        if let Some(token) = token {
            cmd.env("DFS_TOKEN", token);
        }
        if tls {
            cmd.args(["--tls-ca", &ca]);
        }
        cmd.args(args).output().expect("run dfs-client")
    };
    then_kill(&mut nodes, || {
        // Ready: every node up, seen through TLS with the admin token.
        wait_all_up(|| client(Some(&admin), true, &["--json", "status"]));
        let out = client(Some(&admin), true, &["write", "f", "hello"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let out = client(Some(&reader), true, &["read", "f"]);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "hello",
            "{}",
            stderr(&out)
        );

        let refused = |out: Output, why: &str| {
            assert!(!out.status.success(), "must be refused: {out:?}");
            assert!(
                stderr(&out).contains(why),
                "{} does not say {why:?}",
                stderr(&out)
            );
        };
        refused(
            client(Some(&reader), true, &["write", "f", "x"]),
            "read-write",
        );
        refused(client(Some(&reader), true, &["delete", "f"]), "read-write");
        refused(client(None, true, &["read", "f"]), "access token");
        refused(client(Some("admin.00"), true, &["read", "f"]), "not valid");
        refused(client(Some(&admin), false, &["read", "f"]), "");
        let out = client(Some(&admin), true, &["read", "f"]);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "hello",
            "nothing changed"
        );

        // A token removed from the file is refused once the nodes re-read it.
        let tokens = path(&tokens);
        server_tool(&["token", "remove", "reader", "--tokens-file", &tokens]);
        refused(client(Some(&reader), true, &["read", "f"]), "not valid");
    });
}
