//! `dfs-bench` end to end: it starts its own servers (three, or four with `--nodes`), runs
//! every workload with tiny settings and reports them. Checks the report's shape and that
//! every workload did work without errors; never its speed.

use std::process::Command;

use serde_json::Value;

fn bench(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_dfs-bench"))
        .args(["--spawn", "--server", env!("CARGO_BIN_EXE_dfs-server")])
        .args(args)
        .env_remove("DFS_SERVERS")
        .output()
        .expect("run dfs-bench")
}

#[track_caller]
fn ok_stdout(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "dfs-bench failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn every_workload_runs_and_reports_json() {
    let out = bench(&[
        "--workload",
        "all",
        "--clients",
        "4",
        "--duration",
        "700ms",
        "--warmup",
        "100ms",
        "--files",
        "8",
        "--small-files",
        "20",
        "--big-size",
        "3MiB",
        "--json",
    ]);
    let stdout = ok_stdout(&out);
    let report: Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    assert_eq!(report["tool"], "dfs-bench");
    assert_eq!(report["mode"], "spawn");
    assert_eq!(report["replication_factor"], 2);
    assert_eq!(report["fsync"], true);
    assert_eq!(report["clients"], 4);
    assert_eq!(report["nodes"], 3);
    assert_eq!(report["servers"].as_array().expect("servers").len(), 3);
    assert_eq!(report["file_counts"], serde_json::json!([]));
    let workloads = report["workloads"].as_array().expect("workloads");
    let names: Vec<&str> = workloads
        .iter()
        .map(|w| w["workload"].as_str().expect("name"))
        .collect();
    assert_eq!(
        names,
        [
            "append",
            "put",
            "read",
            "mix",
            "small-files",
            "big-put",
            "big-get",
            "latency"
        ]
    );
    for w in workloads {
        let name = &w["workload"];
        assert_eq!(w["errors"], 0, "{name}: {w}");
        assert!(w["first_error"].is_null(), "{name}: {w}");
        assert!(w["ops"].as_u64().expect("ops") > 0, "{name}: {w}");
        assert!(w["bytes"].as_u64().expect("bytes") > 0, "{name}: {w}");
        for field in ["elapsed_s", "ops_per_s", "mb_per_s"] {
            assert!(w[field].as_f64().expect(field) > 0.0, "{name}.{field}: {w}");
        }
        let lat = &w["latency_us"];
        let p = |q: &str| lat[q].as_u64().unwrap_or_else(|| panic!("{name}.{q}: {w}"));
        assert!(
            0 < p("p50") && p("p50") <= p("p99") && p("p99") <= p("p999") && p("p999") <= p("max"),
            "{name}: {lat}"
        );
        let rss = w["server_peak_rss"].as_array().expect("server_peak_rss");
        assert_eq!(rss.len(), 3, "{name}: {w}");
        for r in rss {
            assert!(r["pid"].as_u64().is_some(), "{name}: {r}");
            assert!(r["node"].as_u64().is_some(), "{name}: {r}");
            assert!(r["bytes"].as_u64().expect("rss bytes") > 0, "{name}: {r}");
        }
    }
    let by_name = |n: &str| &workloads[names.iter().position(|x| *x == n).expect(n)];
    assert_eq!(by_name("small-files")["ops"], 20);
    assert_eq!(by_name("big-put")["bytes"], 3 << 20);
    assert_eq!(by_name("big-get")["bytes"], 3 << 20);
    assert_eq!(by_name("latency")["clients"], 1);
}

#[test]
fn a_fixed_op_count_and_the_table() {
    let out = bench(&[
        "--workload",
        "read,append",
        "--clients",
        "3",
        "--connections",
        "1",
        "--ops",
        "30",
        "--warmup",
        "0s",
        "--files",
        "5",
        "--size",
        "1000",
    ]);
    let stdout = ok_stdout(&out);
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("dfs-bench: "), "{stdout}");
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
    for (line, name) in lines[2..4].iter().zip(["read", "append"]) {
        let cells: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cells[0], name, "{stdout}");
        assert_eq!(cells[2], "30", "{stdout}");
        assert_eq!(cells[3], "0", "{stdout}");
    }
}

#[test]
fn the_files_workload_on_four_nodes() {
    let out = bench(&[
        "--nodes",
        "4",
        "--workload",
        "files",
        "--file-counts",
        "50,30",
        "--clients",
        "4",
        "--duration",
        "300ms",
        "--warmup",
        "0s",
        "--json",
    ]);
    let stdout = ok_stdout(&out);
    let report: Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    assert_eq!(report["nodes"], 4);
    assert_eq!(report["servers"].as_array().expect("servers").len(), 4);
    let workloads = report["workloads"].as_array().expect("workloads");
    let rows: Vec<(&str, u64)> = workloads
        .iter()
        .map(|w| {
            let name = w["workload"].as_str().expect("name");
            (name, w["file_count"].as_u64().expect("file_count"))
        })
        .collect();
    // The counts run in increasing order, whatever order they were given in.
    assert_eq!(
        rows,
        [
            ("create", 30),
            ("stat", 30),
            ("ls-dir", 30),
            ("ls-all", 30),
            ("create", 50),
            ("stat", 50),
            ("ls-dir", 50),
            ("ls-all", 50)
        ]
    );
    for w in workloads {
        assert_eq!(w["errors"], 0, "{w}");
        assert!(w["first_error"].is_null(), "{w}");
        assert!(w["ops"].as_u64().expect("ops") > 0, "{w}");
        assert_eq!(
            w["server_peak_rss"].as_array().expect("rss").len(),
            4,
            "{w}"
        );
    }
    // Each create row made the files that take the namespace to its count.
    assert_eq!(workloads[0]["ops"], 30);
    assert_eq!(workloads[4]["ops"], 20);
    assert_eq!(workloads[3]["ops"], 3);
    assert_eq!(workloads[7]["ops"], 3);
    let counts = report["file_counts"].as_array().expect("file_counts");
    assert_eq!(counts.len(), 2);
    for (c, files) in counts.iter().zip([30, 50]) {
        assert_eq!(c["files"], files, "{c}");
        assert_eq!(c["ls_all_pages"], 1, "{c}");
        let rss = c["server_rss"].as_array().expect("server_rss");
        assert_eq!(rss.len(), 4, "{c}");
        for r in rss {
            assert!(r["node"].as_u64().is_some(), "{r}");
            assert!(r["bytes"].as_u64().expect("bytes") > 0, "{r}");
            assert!(r["start_bytes"].as_u64().expect("start_bytes") > 0, "{r}");
            assert!(r["bytes_per_file"].as_f64().is_some(), "{r}");
        }
    }
}

#[test]
fn nodes_is_for_spawn_only_and_at_least_r() {
    let out = Command::new(env!("CARGO_BIN_EXE_dfs-bench"))
        .args(["--servers", "127.0.0.1:1", "--nodes", "5"])
        .output()
        .expect("run dfs-bench");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--nodes is for --spawn"),
        "{out:?}"
    );
    let out = bench(&["--nodes", "1"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--nodes must be"),
        "{out:?}"
    );
}
