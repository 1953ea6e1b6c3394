//! `etcd-bench` end to end against a real etcd: one member on free loopback ports with its
//! data in a temporary directory, killed (by its process handle) when the test ends.
//! Checks that every operation asked for is done, without errors, and that every get's
//! value was verified; never the speed. Skipped, with a message saying so, only when
//! there is no etcd (`/usr/bin/etcd`, or the program `$ETCD_BIN` names).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long etcd may take to start and elect itself.
const START_LIMIT: Duration = Duration::from_secs(60);
/// Pause between two looks at its health.
const POLL: Duration = Duration::from_millis(50);

/// The etcd to start (`$ETCD_BIN`, or `/usr/bin/etcd`): its path, or the path where
/// none was found.
fn etcd_binary() -> Result<PathBuf, PathBuf> {
    let path = std::env::var_os("ETCD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/etcd"));
    if path.is_file() { Ok(path) } else { Err(path) }
}

/// One etcd member, killed and reaped on drop.
struct Etcd {
    child: Child,
    client_addr: String,
    log: PathBuf,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Two distinct free loopback ports (held at once, so they differ).
fn free_ports() -> [u16; 2] {
    let a = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    let b = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    [a, b].map(|l| l.local_addr().expect("its address").port())
}

impl Etcd {
    /// Starts a one-member etcd in `dir` and waits until it reports itself healthy; tries
    /// new ports if it exits at start-up (a port found free can be taken before it binds).
    fn start(binary: &Path, dir: &Path) -> Etcd {
        for attempt in 0..3 {
            let [client, peer] = free_ports();
            let client_url = format!("http://127.0.0.1:{client}");
            let peer_url = format!("http://127.0.0.1:{peer}");
            let log = dir.join(format!("etcd-{attempt}.log"));
            let log_file = std::fs::File::create(&log).expect("create the log");
            let child = Command::new(binary)
                .args(["--name", "test"])
                .arg("--data-dir")
                .arg(dir.join(format!("data-{attempt}")))
                .args(["--listen-client-urls", &client_url])
                .args(["--advertise-client-urls", &client_url])
                .args(["--listen-peer-urls", &peer_url])
                .args(["--initial-advertise-peer-urls", &peer_url])
                .args(["--initial-cluster", &format!("test={peer_url}")])
                .args(["--logger", "zap", "--log-outputs", "stderr"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log_file)
                .spawn()
                .expect("start etcd");
            let mut etcd = Etcd {
                child,
                client_addr: format!("127.0.0.1:{client}"),
                log,
            };
            let started = Instant::now();
            while started.elapsed() < START_LIMIT {
                if etcd.child.try_wait().expect("etcd's status").is_some() {
                    break;
                }
                if healthy(&etcd.client_addr) {
                    return etcd;
                }
                std::thread::sleep(POLL);
            }
            eprintln!(
                "etcd did not start (attempt {attempt}); its log:\n{}",
                std::fs::read_to_string(&etcd.log).unwrap_or_default()
            );
        }
        panic!("etcd did not start");
    }
}

/// Whether etcd at `addr` answers `GET /health` with `"health":"true"` (it does once it
/// has a leader).
fn healthy(addr: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect(addr) else {
        return false;
    };
    let timeout = Some(Duration::from_secs(2));
    if stream.set_read_timeout(timeout).is_err() || stream.set_write_timeout(timeout).is_err() {
        return false;
    }
    let request = format!("GET /health HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut answer = String::new();
    // HTTP/1.0: the answer ends when etcd closes the connection.
    let _ = stream.take(64 * 1024).read_to_string(&mut answer);
    answer.contains("\"health\":\"true\"")
}

fn etcd_bench(etcd: &Etcd, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_etcd-bench"))
        .args(["--endpoints", &etcd.client_addr])
        .args(args)
        .env_remove("ETCD_ENDPOINTS")
        .output()
        .expect("run etcd-bench")
}

#[track_caller]
fn ok_stdout(out: &Output, etcd: &Etcd) -> String {
    assert!(
        out.status.success(),
        "etcd-bench failed: {}\nstdout: {}\nstderr: {}\netcd's log:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(&etcd.log).unwrap_or_default()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn puts_and_verified_gets_against_a_real_etcd() {
    let binary = match etcd_binary() {
        Ok(path) => path,
        Err(missing) => {
            eprintln!(
                "SKIPPED: no etcd at {} (install the Debian package etcd-server, or set \
                 ETCD_BIN to an etcd binary); the etcd-bench test did not run",
                missing.display()
            );
            return;
        }
    };
    let dir = tempfile::tempdir().expect("a temporary directory");
    let etcd = Etcd::start(&binary, dir.path());

    let out = etcd_bench(
        &etcd,
        &[
            "--workload",
            "all",
            "--clients",
            "4",
            "--ops",
            "300",
            "--warmup",
            "0s",
            "--keys",
            "20",
            "--json",
        ],
    );
    let stdout = ok_stdout(&out, &etcd);
    let report: Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    assert_eq!(report["tool"], "etcd-bench");
    assert_eq!(report["clients"], 4);
    assert_eq!(report["connections"], 4);
    assert_eq!(report["size"], 4096);
    assert_eq!(report["linearizable_gets"], true);
    let workloads = report["workloads"].as_array().expect("workloads");
    let names: Vec<&str> = workloads
        .iter()
        .map(|w| w["workload"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["put", "get", "latency"]);
    for w in workloads {
        let name = &w["workload"];
        assert_eq!(w["ops"], 300, "{name}: {w}");
        assert_eq!(w["errors"], 0, "{name}: {w}");
        assert!(w["first_error"].is_null(), "{name}: {w}");
        assert_eq!(w["bytes"], 300 * 4096, "{name}: {w}");
        for field in ["elapsed_s", "ops_per_s", "mb_per_s"] {
            assert!(w[field].as_f64().expect(field) > 0.0, "{name}.{field}: {w}");
        }
        let lat = &w["latency_us"];
        let p = |q: &str| lat[q].as_u64().unwrap_or_else(|| panic!("{name}.{q}: {w}"));
        assert!(
            0 < p("p50") && p("p50") <= p("p99") && p("p99") <= p("p999") && p("p999") <= p("max"),
            "{name}: {lat}"
        );
    }
    assert_eq!(workloads[1]["verified"], 300, "{}", workloads[1]);
    assert_eq!(workloads[0]["clients"], 4);
    assert_eq!(workloads[2]["clients"], 1);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("deleted the "), "{stderr}");

    // The table, with the clients sharing one connection.
    let out = etcd_bench(
        &etcd,
        &[
            "--workload",
            "get",
            "--clients",
            "3",
            "--connections",
            "1",
            "--ops",
            "50",
            "--warmup",
            "0s",
            "--keys",
            "5",
            "--size",
            "1000",
        ],
    );
    let stdout = ok_stdout(&out, &etcd);
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("etcd-bench: "), "{stdout}");
    assert!(
        lines[0].contains("3 clients over 1 connection,"),
        "{stdout}"
    );
    let header: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        &header[..5],
        ["workload", "clients", "ops", "errors", "ops/s"],
        "{stdout}"
    );
    let cells: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(&cells[..4], ["get", "3", "50", "0"], "{stdout}");
    assert_eq!(lines[3], "get: 50 values read and verified", "{stdout}");
}
