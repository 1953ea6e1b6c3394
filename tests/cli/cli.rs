//! Every command of the real `dfs-client` against a real `dfs-server`.

use crate::util::*;

#[test]
fn every_command_works_and_json_has_the_documented_shape() {
    let s = Server::start();
    ok(&s.cli(&["create", "docs/a.txt"]));
    ok(&s.cli(&["write", "docs/a.txt", "hello "]));
    ok(&s.cli(&["write", "docs/a.txt", "world"]));
    assert_eq!(ok(&s.cli(&["read", "docs/a.txt"])), "hello world");
    assert_eq!(
        ok(&s.cli(&["read", "docs/a.txt", "--offset", "6", "--len", "3"])),
        "wor"
    );

    // The seed's test mode: N random letters, printed.
    let out = ok(&s.cli(&["write", "seed.txt", "--random", "40"]));
    let letters: String = out.chars().filter(char::is_ascii_lowercase).collect();
    assert!(out.contains(&ok(&s.cli(&["read", "seed.txt"]))), "{out}");
    assert!(letters.len() >= 40);
    assert_eq!(ok(&s.cli(&["read", "seed.txt"])).len(), 40);

    // put from a file, from stdin, and get to a file.
    let tmp = tempfile::tempdir().expect("tempdir");
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let src = write_file(tmp.path(), "src.bin", &data);
    ok(&s.cli(&["put", "bin/big", src.to_str().expect("utf-8 path")]));
    let dst = tmp.path().join("dst.bin");
    ok(&s.cli(&["get", "bin/big", dst.to_str().expect("utf-8 path")]));
    assert!(
        std::fs::read(&dst).expect("downloaded") == data,
        "get returned other bytes"
    );
    ok(&s.cli_stdin(&["put", "bin/stdin", "-"], b"from stdin"));
    assert_eq!(ok(&s.cli(&["read", "bin/stdin"])), "from stdin");
    ok(&s.cli_stdin(&["put", "bin/stdin2"], b"implicit stdin"));
    assert_eq!(ok(&s.cli(&["read", "bin/stdin2"])), "implicit stdin");

    let stat = json(&s.cli(&["--json", "stat", "docs/a.txt"]));
    assert_eq!(stat["name"], "docs/a.txt");
    assert_eq!(stat["size"], 11);
    assert_eq!(stat["version"], 2);
    assert_eq!(stat["replicas"], serde_json::json!([1]));
    let checksum = stat["checksum"].as_str().expect("checksum string");
    assert_eq!(checksum.len(), 8);
    assert!(checksum.chars().all(|c| c.is_ascii_hexdigit()));

    let ls = json(&s.cli(&["--json", "ls", "docs/"]));
    assert_eq!(
        ls,
        serde_json::json!([{"name": "docs/a.txt", "size": 11, "version": 2}])
    );
    let all = json(&s.cli(&["--json", "ls"]));
    assert_eq!(all.as_array().expect("array").len(), 5);
    let human = ok(&s.cli(&["ls", "bin/"]));
    assert!(
        human.contains("bin/big") && human.contains("3000000"),
        "{human}"
    );

    let table = json(&s.cli(&["--json", "table"]));
    assert_eq!(table["docs/a.txt"], serde_json::json!([1]));
    assert_eq!(table.as_object().expect("object").len(), 5);

    let status = json(&s.cli(&["--json", "status"]));
    let node = &status.as_array().expect("array")[0];
    assert_eq!(node["id"], 1);
    assert_eq!(node["addr"], s.addr());
    assert_eq!(node["up"], true);
    assert_eq!(node["role"], "leader");
    assert!(ok(&s.cli(&["status"])).contains(&s.addr()));

    ok(&s.cli(&["delete", "docs/a.txt"]));
    let err = fails(&s.cli(&["read", "docs/a.txt"]));
    assert!(err.contains("not found"), "{err}");
    let err = fails(&s.cli(&["delete", "docs/a.txt"]));
    assert!(err.contains("not found"), "{err}");
}

#[test]
fn every_error_is_one_clear_line_and_a_nonzero_status() {
    let s = Server::start();
    for (name, rule) in [
        ("../x", "'..'"),
        ("/x", "must not start with '/'"),
        ("a//b", "no empty segment"),
        (".", "'.'"),
        ("a\tb", "control characters"),
    ] {
        for cmd in [
            &["create", name][..],
            &["write", name, "x"],
            &["read", name],
            &["stat", name],
        ] {
            let err = fails(&s.cli(cmd));
            assert!(err.contains(rule), "{cmd:?}: {err}");
        }
    }
    let long = "x".repeat(1025);
    assert!(fails(&s.cli(&["create", &long])).contains("at most 1024 bytes"));
    let seg = "x".repeat(256);
    assert!(fails(&s.cli(&["create", &seg])).contains("at most 255 bytes"));

    ok(&s.cli(&["create", "f"]));
    assert!(fails(&s.cli(&["create", "f"])).contains("already exists"));
    assert!(fails(&s.cli(&["stat", "missing"])).contains("not found"));
    assert!(fails(&s.cli(&["get", "missing", "/tmp/never-written"])).contains("not found"));

    // Nothing listening: a clear error, not a hang.
    let port = free_port();
    let out = client_cmd(&format!("127.0.0.1:{port}"))
        .args(["ls"])
        .output()
        .expect("run");
    let err = fails(&out);
    assert!(err.contains("no server available"), "{err}");
    // Nothing was changed by the refused commands.
    let names = json(&s.cli(&["--json", "ls"]));
    assert_eq!(
        names,
        serde_json::json!([{"name": "f", "size": 0, "version": 0}])
    );
}

#[test]
fn servers_come_from_the_environment() {
    let s = Server::start();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dfs-client"))
        .args(["write", "env.txt", "via DFS_SERVERS"])
        .env("DFS_SERVERS", s.addr())
        .output()
        .expect("run");
    ok(&out);
    assert_eq!(ok(&s.cli(&["read", "env.txt"])), "via DFS_SERVERS");
}

#[test]
fn sigterm_stops_cleanly_and_keeps_the_data() {
    let mut s = Server::start();
    ok(&s.cli(&["write", "kept", "across restarts"]));
    let status = s.terminate();
    assert!(status.success(), "exit status after SIGTERM: {status}");
    s.restart();
    assert_eq!(ok(&s.cli(&["read", "kept"])), "across restarts");
}

#[test]
fn dev_mode_serves_with_data_in_dfs_data_to_the_token_it_prints() {
    use std::io::BufRead;
    let cwd = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_dfs-server"))
        .args(["dev", "--port", &port.to_string()])
        .current_dir(cwd.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn dev");
    let addr = format!("127.0.0.1:{port}");
    // The banner comes once the nodes serve: `export DFS_TOKEN=...` is the token.
    let stdout = child.stdout.take().expect("stdout");
    let token = std::io::BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find_map(|l| {
            l.trim()
                .strip_prefix("export DFS_TOKEN=")
                .map(str::to_owned)
        });
    let result = std::panic::catch_unwind(|| {
        let token = token.expect("dev prints the token it made");
        assert!(welcomes_with(&addr, Some(&token)), "dev serves its token");
        assert!(!welcomes(&addr), "and no client without one");
        let kept = std::fs::read_to_string(cwd.path().join("dfs-data/dev-token"))
            .expect("the token is kept in dfs-data/dev-token");
        assert_eq!(kept.trim(), token);
        let out = client_cmd(&addr)
            .args(["write", "hello", "dev"])
            .env("DFS_TOKEN", &token)
            .output()
            .expect("run");
        ok(&out);
    });
    child.kill().expect("kill");
    child.wait().expect("reap");
    result.expect("write to the dev server");
    assert!(
        cwd.path().join("dfs-data").is_dir(),
        "data not under ./dfs-data"
    );
}

#[test]
fn the_server_refuses_bad_configurations_clearly() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().to_str().expect("utf-8 path");
    let cases: [(&[&str], &str); 5] = [
        (
            &[
                "--id",
                "3",
                "--cluster",
                "1=127.0.0.1:1",
                "--data-dir",
                data,
            ],
            "not in the --cluster list",
        ),
        (
            &["--id", "1", "--cluster", "1=127.0.0.1", "--data-dir", data],
            "not HOST:PORT",
        ),
        (
            &[
                "--id",
                "1",
                "--cluster",
                "1=127.0.0.1:1,1=127.0.0.1:2",
                "--data-dir",
                data,
            ],
            "appears twice",
        ),
        (
            &[
                "--id",
                "1",
                "--cluster",
                "1=127.0.0.1:1",
                "--data-dir",
                data,
                "--replication-factor",
                "2",
            ],
            "between 1 and the number of members",
        ),
        (&["--id", "1"], "required"),
    ];
    for (args, message) in cases {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_dfs-server"))
            .args(args)
            .output()
            .expect("run dfs-server");
        assert!(!out.status.success(), "{args:?} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(message), "{args:?}: {err}");
    }
}
