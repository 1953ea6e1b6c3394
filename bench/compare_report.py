#!/usr/bin/env python3
"""The summary of a bench/compare.sh run: reads DIR/raw/*.json (what the tools wrote) and
writes DIR/summary.md (one Markdown table of figures and ratios, with the machine and how
each figure was measured), DIR/summary.json (the same figures), and the plot's data and
gnuplot script (DIR/throughput.dat, DIR/throughput.gp).

Every figure is one a tool reported in this run; a figure that is missing is shown as "—".

    python3 bench/compare_report.py DIR
"""

import json
import sys
from pathlib import Path

DASH = "—"


def load(raw, name):
    path = raw / name
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def workloads(report):
    """A dfs-bench or etcd-bench report's workloads, by name."""
    if not report:
        return {}
    return {w["workload"]: w for w in report.get("workloads", [])}


def fmt_ms(us):
    ms = us / 1000.0
    if ms < 10:
        return f"{ms:.2f}"
    if ms < 100:
        return f"{ms:.1f}"
    return f"{ms:.0f}"


def fmt_rate(w):
    """ops/s with its p50 / p99 latency, and its errors if any."""
    if not w:
        return DASH
    lat = w["latency_us"]
    cell = f"{w['ops_per_s']:,.0f}/s ({fmt_ms(lat['p50'])} / {fmt_ms(lat['p99'])} ms)"
    if w["errors"]:
        cell += f" ⚠ {w['errors']} errors"
    return cell


def ratio(a, b):
    if a is None or b is None or b == 0:
        return DASH
    return f"{a / b:.2f}×"


def ops(w):
    return w["ops_per_s"] if w and w["ops"] else None


def mib(n):
    return f"{n / (1 << 20):.0f} MiB"


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = Path(sys.argv[1]).resolve()
    raw = out / "raw"
    machine = load(raw, "machine.json") or {}
    clients = machine.get("clients", [])
    read_set = machine.get("read_set", 1000)

    # The machine's limits.
    iperf = load(raw, "iperf3.json")
    loopback_mbs = None
    if iperf and "end" in iperf and "sum_received" in iperf["end"]:
        loopback_mbs = iperf["end"]["sum_received"]["bits_per_second"] / 8 / 1e6
    fio4k = load(raw, "fio-4k-fdatasync.json")
    fio_iops = fsync_p50_us = cycle_us = None
    if fio4k:
        job = fio4k["jobs"][0]
        fio_iops = job["write"]["iops"]
        fsync_p50_us = job["sync"]["lat_ns"]["percentile"]["50.000000"] / 1000
        cycle_us = 1e6 / fio_iops if fio_iops else None
    fioseq = load(raw, "fio-1m-seq.json")
    seq_mbs = None
    if fioseq:
        job = fioseq["jobs"][0]
        # job_runtime (ms) includes the end fsync: fio calls it inside its timed I/O loop.
        seq_mbs = job["write"]["io_bytes"] / (job["job_runtime"] / 1000) / 1e6

    etcd = {c: workloads(load(raw, f"etcd-{c}.json")) for c in clients}
    dfs = {c: workloads(load(raw, f"dfs-{c}.json")) for c in clients}
    etcd_lat = workloads(load(raw, "etcd-latency.json")).get("latency")
    other_report = load(raw, "dfs-other.json")
    other = workloads(other_report)
    failover = load(raw, "dfs-failover.json")
    etcd_rss = load(raw, "etcd-rss.json") or []

    def plural(c):
        return f"{c} client" + ("" if c == 1 else "s")

    rows = []
    fio_cell = f"{fio_iops:,.0f} IOPS (fio, 1 job)" if fio_iops else DASH
    for c in clients:
        d, e = dfs[c].get("append"), etcd[c].get("put")
        rows.append((f"4 KiB durable writes, {plural(c)}: dfs appends to {read_set:,} files; etcd puts of new keys",
                     fmt_rate(d), fmt_rate(e), fio_cell, ratio(ops(d), ops(e)), ratio(ops(d), fio_iops)))
    for c in clients:
        d, e = dfs[c].get("put"), etcd[c].get("put")
        rows.append((f"4 KiB writes under a new name, {plural(c)}: dfs puts of new files; etcd puts of new keys",
                     fmt_rate(d), fmt_rate(e), fio_cell, ratio(ops(d), ops(e)), ratio(ops(d), fio_iops)))
    for c in clients:
        d, e = dfs[c].get("read"), etcd[c].get("get")
        rows.append((f"4 KiB linearizable reads, {plural(c)}: dfs reads of {read_set:,} files; etcd gets of {read_set:,} keys",
                     fmt_rate(d), fmt_rate(e), DASH, ratio(ops(d), ops(e)), DASH))

    d, e = other.get("latency"), etcd_lat
    d50 = d["latency_us"]["p50"] if d and d["ops"] else None
    e50 = e["latency_us"]["p50"] if e and e["ops"] else None
    limit = DASH
    if fsync_p50_us is not None:
        limit = f"fdatasync p50 {fmt_ms(fsync_p50_us)} ms; write+fdatasync mean {fmt_ms(cycle_us)} ms (fio)"
    def latency_cell(w):
        if not w or not w["ops"]:
            return DASH
        lat = w["latency_us"]
        cell = f"p50 {fmt_ms(lat['p50'])} ms (p99 {fmt_ms(lat['p99'])} ms, {w['ops_per_s']:,.0f}/s)"
        return cell + (f" ⚠ {w['errors']} errors" if w["errors"] else "")

    rows.append(("1 client, sequential 4 KiB durable writes, p50 latency (ratios: >1 is slower): dfs appends to one file; etcd puts to one key",
                 latency_cell(d), latency_cell(e),
                 limit, ratio(d50, e50), ratio(d50, fsync_p50_us)))

    w = other.get("small-files")
    rows.append((f"small-file cycles (create, write 4 KiB, read back, delete), {plural(machine.get('small_clients', 64))}",
                 fmt_rate(w), DASH, DASH, DASH, DASH))

    big = machine.get("big_size", "?")
    w = other.get("big-put")
    put_mbs = w["mb_per_s"] if w and w["ops"] else None
    rows.append((f"one {big} put, streamed (R = 2: each byte is written twice to this one disk)",
                 f"{put_mbs:,.0f} MB/s" if put_mbs else (f"failed: {w['first_error']}" if w else DASH),
                 DASH, f"{seq_mbs:,.0f} MB/s (fio 1 MiB writes + end fsync)" if seq_mbs else DASH,
                 DASH, ratio(put_mbs, seq_mbs)))
    w = other.get("big-get")
    get_mbs = w["mb_per_s"] if w and w["ops"] else None
    rows.append((f"one {big} get, streamed",
                 f"{get_mbs:,.0f} MB/s" if get_mbs else (f"failed: {w['first_error']}" if w else DASH),
                 DASH, f"{loopback_mbs:,.0f} MB/s (iperf3 loopback, 1 stream)" if loopback_mbs else DASH,
                 DASH, ratio(get_mbs, loopback_mbs)))

    if failover:
        cell = f"median {failover['median_s']:.2f} s, worst {failover['worst_s']:.2f} s ({len(failover['runs'])} runs)"
    else:
        cell = DASH
    rows.append(("failover: a file's primary SIGKILLed, to the first acknowledged append",
                 cell, DASH, DASH, DASH, DASH))

    dfs_peaks = [r["bytes"] for rep in [*(load(raw, f"dfs-{c}.json") for c in clients), other_report] if rep
                 for w in rep.get("workloads", []) for r in w.get("server_peak_rss", []) if r.get("bytes")]
    etcd_peaks = [r["peak_rss_bytes"] for r in etcd_rss if r.get("peak_rss_bytes")]
    rows.append(("peak RSS of the largest server process (dfs: over each workload; etcd: since it started)",
                 mib(max(dfs_peaks)) if dfs_peaks else DASH,
                 mib(max(etcd_peaks)) if etcd_peaks else DASH, DASH, ratio(max(dfs_peaks, default=None), max(etcd_peaks, default=None)), DASH))

    header = ("measure", "dfs (R = 2, fsync on)", "etcd (3 members)", "machine limit", "dfs / etcd", "dfs / limit")
    table = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    table += ["| " + " | ".join(r) + " |" for r in rows]

    errors = []
    for name, rep in [*((f"dfs-{c}", load(raw, f"dfs-{c}.json")) for c in clients),
                      ("dfs-other", other_report),
                      *((f"etcd-{c}", load(raw, f"etcd-{c}.json")) for c in clients),
                      ("etcd-latency", load(raw, "etcd-latency.json"))]:
        for w in (rep or {}).get("workloads", []):
            if w["errors"]:
                errors.append(f"- {name} {w['workload']}: {w['errors']} errors; first: {w['first_error']}")

    fs = machine.get("filesystem") or []
    load_end = load(raw, "loadavg-end.json")
    versions = machine.get("versions", {})
    etcd_version = (versions.get("etcd") or ["etcd ?"])[0].replace("etcd Version:", "etcd")
    busy_before = machine.get("cpu_busy_before")
    busy = ""
    if busy_before is not None:
        busy = f"; the CPUs were {busy_before:.0%} busy over 2 s just before the run started"
        if busy_before > 0.25:
            busy += (": **the machine was busy** with work other than this run's, so these "
                     "figures are not the system's")
    lines = [
        f"# dfs against etcd and the machine, {machine.get('started_utc', '?')} ({machine.get('mode', '?')} run)",
        "",
        f"- Machine: {machine.get('cpu', '?')}, {machine.get('cores', '?')} cores, "
        f"{(machine.get('memory_bytes') or 0) / (1 << 30):.1f} GiB, Linux {machine.get('kernel', '?')}; "
        f"data on {fs[1] if len(fs) > 1 else '?'} ({fs[0] if fs else '?'}), every server on loopback.",
        f"- Load average (1, 5, 15 min) at the start {' '.join(machine.get('loadavg_start', []))}, "
        f"at the end {' '.join(load_end or [])}{busy}.",
        f"- dfs {machine.get('commit', '?')}{' (uncommitted changes)' if machine.get('dirty') else ''}; "
        f"{etcd_version}; {versions.get('fio', 'fio ?')}; {(versions.get('iperf3') or ['iperf3 ?'])[0]}; {versions.get('rustc', '?')}.",
        f"- Each throughput run: {machine.get('duration', '?')} after {machine.get('warmup', '?')} of warm-up, "
        f"closed-loop clients each on its own connection; cells are ops/s (p50 / p99 latency).",
        "",
        *table,
        "",
    ]
    if errors:
        lines += ["Errors (counted, never as operations):", "", *errors, ""]
    lines += [
        "How each figure was measured:",
        "",
        "- dfs: `dfs-bench --spawn` (three `dfs-server` processes, R = 2, fsync on; a fresh cluster "
        "for each client count), appends spread over the files, puts each to a new file, reads checked "
        "against the bytes written; `dfs-failover` (the killed primary is not the map's leader).",
        "- etcd: three members on loopback, default durability (fsync of the WAL on every commit), "
        "driven by `etcd-bench` (etcd's gRPC API, the same closed loop and histograms as dfs-bench): "
        "puts of new keys, linearizable gets (`serializable = false`) each checked against the value put; "
        "client k connects to member k mod 3.",
        "- Machine limits: `iperf3 -c 127.0.0.1 -J` (one TCP stream); `fio --rw=write --bs=4k "
        "--fdatasync=1 --ioengine=sync` (one job, a write then an fdatasync per operation, so its IOPS "
        "is one stream of durable writes; concurrent clients can beat it by sharing an fsync); "
        "`fio --rw=write --bs=1M --end_fsync=1` (buffered, the fsync at the end counted in its time). "
        "fio ran in the directory holding the servers' data.",
        "- Ratios divide dfs's figure by the other's: above 1 dfs is faster, except on the latency "
        "row and the memory row, where above 1 dfs takes longer or more.",
        "",
        "Files: `raw/*.json` (every tool's output), `logs/`, `throughput.png` (throughput.dat, throughput.gp).",
        "",
    ]
    (out / "summary.md").write_text("\n".join(lines))

    summary = {
        "machine": machine,
        "limits": {"loopback_mb_per_s": loopback_mbs, "fio_4k_fdatasync_iops": fio_iops,
                   "fio_fdatasync_p50_us": fsync_p50_us, "fio_1m_seq_end_fsync_mb_per_s": seq_mbs},
        "rows": [dict(zip(header, r)) for r in rows],
        "errors": errors,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")

    # The plot: throughput against clients.
    def val(w):
        return f"{w['ops_per_s']:.1f}" if w and w["ops"] else "?"

    dat = ["# clients dfs_append dfs_put dfs_read etcd_put etcd_get (operations per second)"]
    for c in clients:
        dat.append(" ".join([str(c), val(dfs[c].get("append")), val(dfs[c].get("put")), val(dfs[c].get("read")),
                             val(etcd[c].get("put")), val(etcd[c].get("get"))]))
    (out / "throughput.dat").write_text("\n".join(dat) + "\n")
    xtics = ", ".join(str(c) for c in clients)
    gp = f"""# gnuplot {out / 'throughput.gp'} (or with -e "terminal='png'")
if (!exists("terminal")) terminal = "pngcairo"
set terminal @terminal size 1100,600
set output "{out / 'throughput.png'}"
set title "4 KiB operations per second against concurrent clients, {machine.get('started_utc', '')} ({machine.get('mode', '')} run)"
set xlabel "concurrent clients (log scale)"
set ylabel "operations per second (log scale)"
set logscale x 2
set logscale y 10
set xtics ({xtics})
set xrange [{min(clients, default=1) / 1.5}:{max(clients, default=256) * 1.5}]
set grid
set key outside right top vertical
set datafile missing "?"
data = "{out / 'throughput.dat'}"
plot data using 1:2 with linespoints lw 2 pt 7 lc rgb "#1f77b4" title "dfs appends", \\
     data using 1:3 with linespoints lw 2 pt 5 lc rgb "#2ca02c" title "dfs puts (new files)", \\
     data using 1:4 with linespoints lw 2 pt 9 lc rgb "#9467bd" title "dfs reads", \\
     data using 1:5 with linespoints lw 2 dt 2 pt 4 lc rgb "#d62728" title "etcd puts (new keys)", \\
     data using 1:6 with linespoints lw 2 dt 2 pt 8 lc rgb "#ff7f0e" title "etcd gets (linearizable)"
"""
    (out / "throughput.gp").write_text(gp)


if __name__ == "__main__":
    main()
