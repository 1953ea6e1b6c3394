//! Lock leases and conditional writes through the real `dfs-client`, against three real
//! `dfs-server` processes: `lock` / `renew` / `unlock` as one-shot commands and in the
//! shell, fencing tokens (`--fence`) refusing a vanished holder's writes once the lock went
//! to someone else, and compare-and-set (`--if-version`) on `write`, `put` and `delete`.
//!
//! A one-shot `lock` that exits holds its lease until the ttl runs out: it is exactly a
//! holder that paused or vanished without unlocking. Nothing here sleeps: a lock that must
//! wait for a lapsed lease waits with `--wait`, and the shell is read a line at a time
//! with a deadline.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Output, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{Cluster, IDS};
use crate::util::{client_cmd, fails, json, ok};

/// How long the shell may take to answer one line.
const LINE_DEADLINE: Duration = Duration::from_secs(30);

/// `lock ARGS --json` through node `via`: the grant's lease and token, after checking the
/// object's shape.
fn lock(c: &Cluster, via: u64, args: &[&str]) -> (u64, u64) {
    let out = c.run(&[via], &[&["--json", "lock"], args].concat(), None);
    grant_of(&json(&out))
}

/// The lease and token of a `lock --json` or `renew --json` answer.
#[track_caller]
fn grant_of(v: &Value) -> (u64, u64) {
    let obj = v.as_object().expect("an object");
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["lease", "mode", "name", "token", "ttl_ms"], "{v}");
    let lease = v["lease"].as_u64().expect("lease");
    let token = v["token"].as_u64().expect("token");
    assert!(token > 0, "{v}");
    (lease, token)
}

/// The lease and token in `locked NAME (MODE, ttl D): lease L, fencing token T`.
#[track_caller]
fn grant_of_text(line: &str) -> (u64, u64) {
    let number_after = |word: &str| -> u64 {
        let at = line
            .find(word)
            .unwrap_or_else(|| panic!("no {word:?} in {line:?}"));
        line[at + word.len()..]
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no number after {word:?} in {line:?}"))
    };
    (number_after("lease "), number_after("fencing token "))
}

fn version(c: &Cluster, via: u64, name: &str) -> u64 {
    c.json(&[via], &["stat", name])["version"]
        .as_u64()
        .expect("version")
}

fn read(c: &Cluster, via: u64, name: &str) -> String {
    ok(&c.run(&[via], &["read", name], None))
}

/// `put NAME - ARGS` with `data` on standard input, through `via`.
fn put(c: &Cluster, via: u64, name: &str, data: &str, args: &[&str]) -> Output {
    c.run(
        &[via],
        &[&["put", name, "-"], args].concat(),
        Some(data.as_bytes()),
    )
}

#[test]
fn lock_prints_the_lease_and_token_and_excludes_others() {
    let c = Cluster::start(2);

    // Text: the lease id and the fencing token, on one line.
    let text = ok(&c.run(&[1], &["lock", "jobs/a", "--ttl", "60s"], None));
    assert!(
        text.starts_with("locked jobs/a (exclusive, ttl 1m): lease ") && text.ends_with('\n'),
        "{text:?}"
    );
    assert_eq!(text.lines().count(), 1, "{text:?}");
    let (lease1, token1) = grant_of_text(&text);

    // JSON: {name, mode, lease, token, ttl_ms}.
    let out = c.run(
        &[2],
        &["lock", "jobs/b", "--ttl", "90s", "--shared", "--json"],
        None,
    );
    let v = json(&out);
    let (lease_b, token_b) = grant_of(&v);
    assert_eq!(v["name"], "jobs/b");
    assert_eq!(v["mode"], "shared");
    assert_eq!(v["ttl_ms"], 90_000);
    assert_ne!(lease_b, lease1);
    assert!(token_b > token1, "tokens grow: {token1} then {token_b}");

    // Held exclusively: another exclusive or shared lock without a wait fails at once, with
    // one line saying so, through any node.
    for (via, args) in [
        (2, &["lock", "jobs/a"][..]),
        (3, &["lock", "jobs/a", "--wait", "0s"][..]),
        (1, &["lock", "jobs/a", "--shared"][..]),
    ] {
        let err = fails(&c.run(&[via], args, None));
        assert!(
            err.starts_with("error: lock held: ") && err.contains("\"jobs/a\" is locked by"),
            "{args:?} through {via}: {err}"
        );
    }
    // Shared: more shared holders are welcome, an exclusive one is not.
    let (lease_b2, _) = lock(&c, 3, &["jobs/b", "--shared", "--ttl", "60s"]);
    let err = fails(&c.run(&[1], &["lock", "jobs/b"], None));
    assert!(err.contains("locked by 2 holder(s), shared"), "{err}");

    // Unlocked: the next lock gets it, with a larger token; the old lease is gone.
    let out = ok(&c.run(&[3], &["unlock", &lease1.to_string()], None));
    assert_eq!(out, format!("unlocked lease {lease1}\n"));
    let err = fails(&c.run(&[2], &["unlock", &lease1.to_string()], None));
    assert!(
        err.contains(&format!("lease {lease1} has expired or was released")),
        "{err}"
    );
    let (lease2, token2) = lock(&c, 2, &["jobs/a", "--ttl", "60s"]);
    assert_ne!(lease2, lease1);
    assert!(
        token2 > token_b && token2 > token1,
        "token {token2} after {token1} and {token_b}"
    );
    let v = json(&c.run(&[1], &["--json", "unlock", &lease2.to_string()], None));
    assert_eq!(v, serde_json::json!({ "lease": lease2, "unlocked": true }));
    for lease in [lease_b, lease_b2] {
        ok(&c.run(&[1], &["unlock", &lease.to_string()], None));
    }
    lock(&c, 1, &["jobs/b", "--ttl", "60s"]);

    // A ttl the cluster does not take is refused with its range, and a bad duration is a
    // usage error.
    let err = fails(&c.run(&[1], &["lock", "jobs/c", "--ttl", "10ms"], None));
    assert!(err.contains("ttl must be 100 ms"), "{err}");
    let out = c.run(&[1], &["lock", "jobs/c", "--ttl", "ten"], None);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[test]
fn a_vanished_holder_is_fenced_off() {
    let c = Cluster::start(2);
    ok(&put(&c, 1, "counter", "0", &[]));

    // A takes the lock for 1 s and exits without renewing or unlocking: a vanished
    // holder. While its lease lasts, its fenced writes go through.
    let (lease_a, token_a) = lock(&c, 1, &["counter", "--ttl", "1s"]);
    let token_a_arg = token_a.to_string();
    ok(&put(&c, 2, "counter", "A", &["--fence", &token_a_arg]));

    // B waits for the lock: it gets it once A's lease has lapsed.
    let start = Instant::now();
    let (lease_b, token_b) = lock(&c, 2, &["counter", "--wait", "20s", "--ttl", "60s"]);
    eprintln!("B got the lock after {:?}", start.elapsed());
    assert!(token_b > token_a, "B's token {token_b}, A's {token_a}");
    let token_b_arg = token_b.to_string();
    ok(&put(&c, 3, "counter", "B", &["--fence", &token_b_arg]));

    // A comes back and writes with its old token: refused, naming the stale token, and
    // nothing changes; the same for an append and a delete.
    let stale = format!("fencing token {token_a} is stale");
    let err = fails(&put(
        &c,
        1,
        "counter",
        "A again",
        &["--fence", &token_a_arg],
    ));
    assert!(err.contains(&stale), "{err}");
    let err = fails(&c.run(
        &[2],
        &["write", "counter", "+A", "--fence", &token_a_arg],
        None,
    ));
    assert!(err.contains(&stale), "{err}");
    let err = fails(&c.run(&[3], &["delete", "counter", "--fence", &token_a_arg], None));
    assert!(err.contains(&stale), "{err}");
    for via in IDS {
        assert_eq!(read(&c, via, "counter"), "B", "through {via}");
    }

    // A's lease is gone: it cannot renew or unlock it.
    for cmd in ["renew", "unlock"] {
        let err = fails(&c.run(&[1], &[cmd, &lease_a.to_string()], None));
        assert!(
            err.contains(&format!("lease {lease_a} has expired or was released")),
            "{cmd}: {err}"
        );
    }
    // B's is fine: renewed, same lease and token, then released.
    let v = json(&c.run(&[3], &["--json", "renew", &lease_b.to_string()], None));
    assert_eq!(grant_of(&v), (lease_b, token_b));
    assert_eq!(v["ttl_ms"], 60_000);
    ok(&c.run(&[1], &["unlock", &lease_b.to_string()], None));
    // B's token still fences: nobody took the lock since.
    ok(&c.run(
        &[1],
        &["write", "counter", "+B", "--fence", &token_b_arg],
        None,
    ));
    assert_eq!(read(&c, 2, "counter"), "B+B");
}

#[test]
fn if_version_is_compare_and_set() {
    let c = Cluster::start(2);
    ok(&put(&c, 1, "cfg", "v1", &[]));
    let v = version(&c, 1, "cfg");

    // put: the matching version wins and moves it on; the old one is refused.
    let (cur, old) = ((v + 1).to_string(), v.to_string());
    let out = put(&c, 2, "cfg", "v2", &["--if-version", &old, "--json"]);
    assert_eq!(json(&out)["version"], v + 1);
    let err = fails(&put(&c, 3, "cfg", "v3", &["--if-version", &old]));
    assert!(
        err.contains(&format!("\"cfg\" is at version {}, not {v}", v + 1)),
        "{err}"
    );
    assert_eq!(read(&c, 1, "cfg"), "v2");

    // write (append): the same.
    let err = fails(&c.run(&[1], &["write", "cfg", "+x", "--if-version", &old], None));
    assert!(err.contains("is at version"), "{err}");
    let out = ok(&c.run(&[3], &["write", "cfg", "+y", "--if-version", &cur], None));
    assert!(out.contains(&format!("version {}", v + 2)), "{out}");
    assert_eq!(read(&c, 2, "cfg"), "v2+y");

    // --if-version 0: only if the file does not exist (create-if-absent).
    ok(&put(&c, 1, "fresh", "first", &["--if-version", "0"]));
    let err = fails(&put(&c, 2, "fresh", "second", &["--if-version", "0"]));
    assert!(err.contains("not 0"), "{err}");
    assert_eq!(read(&c, 3, "fresh"), "first");

    // delete: refused at a stale version (the file stays), done at the current one.
    let err = fails(&c.run(&[2], &["delete", "cfg", "--if-version", &cur], None));
    assert!(err.contains("is at version"), "{err}");
    assert_eq!(read(&c, 1, "cfg"), "v2+y");
    let now = (v + 2).to_string();
    ok(&c.run(&[3], &["delete", "cfg", "--if-version", &now], None));
    let err = fails(&c.run(&[1], &["stat", "cfg"], None));
    assert!(err.contains("not found"), "{err}");

    // Both conditions at once: each must hold.
    let (lease, token) = lock(&c, 1, &["fresh", "--ttl", "60s"]);
    let token = token.to_string();
    let at = version(&c, 1, "fresh").to_string();
    let err = fails(&put(
        &c,
        2,
        "fresh",
        "no",
        &["--fence", &token, "--if-version", "0"],
    ));
    assert!(err.contains("is at version"), "{err}");
    ok(&put(
        &c,
        2,
        "fresh",
        "both",
        &["--fence", &token, "--if-version", &at],
    ));
    assert_eq!(read(&c, 3, "fresh"), "both");
    ok(&c.run(&[1], &["unlock", &lease.to_string()], None));
}

/// A `dfs-client` shell fed one line at a time, its output read a line at a time.
struct Shell {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    stderr: Option<JoinHandle<String>>,
}

impl Shell {
    fn start(servers: &str) -> Shell {
        let mut child = client_cmd(servers)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn dfs-client");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut stderr = child.stderr.take().expect("stderr");
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        Shell {
            stdin: child.stdin.take(),
            child,
            lines,
            stderr: Some(stderr),
        }
    }

    /// Types a line.
    fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("open");
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .expect("write to the shell");
    }

    /// Types a line and returns the one line it prints.
    #[track_caller]
    fn answer(&mut self, line: &str) -> String {
        self.send(line);
        self.lines
            .recv_timeout(LINE_DEADLINE)
            .unwrap_or_else(|e| panic!("{line:?}: no answer within {LINE_DEADLINE:?}: {e}"))
    }

    /// Types `exit`; returns whether the shell exited with success, and its stderr.
    fn exit(mut self) -> (bool, String) {
        self.send("exit");
        self.stdin = None;
        let deadline = Instant::now() + LINE_DEADLINE;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            assert!(Instant::now() < deadline, "the shell did not exit");
            std::thread::sleep(Duration::from_millis(20));
        };
        let stderr = self.stderr.take().expect("once").join().expect("stderr");
        (status.success(), stderr)
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_shell_locks_and_unlocks() {
    let c = Cluster::start(2);
    let mut sh = Shell::start(&c.servers(&IDS));

    let first: Value = serde_json::from_str(&sh.answer("lock s/f --ttl 60s --json")).expect("JSON");
    let (lease1, token1) = grant_of(&first);
    // Held: an error on stderr, and the shell goes on.
    sh.send("lock s/f");
    assert_eq!(
        sh.answer(&format!("unlock {lease1}")),
        format!("unlocked lease {lease1}")
    );
    let line = sh.answer("lock s/f --wait 5s --ttl 60s");
    assert!(
        line.starts_with("locked s/f (exclusive, ttl 1m): "),
        "{line}"
    );
    let (lease2, token2) = grant_of_text(&line);
    assert!(token2 > token1, "{token1} then {token2}");

    let line = sh.answer(&format!("write s/f hello --fence {token2}"));
    assert!(line.starts_with("appended 5 bytes to s/f"), "{line}");
    // The first holder's token is stale now: refused, on stderr.
    sh.send(&format!("write s/f stale --fence {token1}"));
    let renewed: Value =
        serde_json::from_str(&sh.answer(&format!("renew {lease2} --json"))).expect("JSON");
    assert_eq!(grant_of(&renewed), (lease2, token2));
    assert_eq!(
        sh.answer(&format!("unlock {lease2}")),
        format!("unlocked lease {lease2}")
    );
    assert_eq!(sh.answer("read s/f"), "hello");

    let (success, stderr) = sh.exit();
    assert!(success, "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 2, "{stderr}");
    assert!(errors[0].starts_with("error: lock held: "), "{stderr}");
    assert!(
        errors[1].contains(&format!("fencing token {token1} is stale")),
        "{stderr}"
    );
}
