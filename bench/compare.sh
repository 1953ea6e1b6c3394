#!/usr/bin/env bash
# bench/compare.sh: dfs against etcd and against this machine's limits, in one run on one
# machine, so that every figure shares the same CPU, disk and kernel.
#
#   bash bench/compare.sh [--quick] [--out DIR] [--no-build]
#
# 1. Installs what it needs from Debian's packages if missing (iperf3 fio etcd-server
#    etcd-client gnuplot-nox; as root, or with sudo) and builds the release binaries
#    (dfs-server, dfs-bench, dfs-failover, etcd-bench).
# 2. The machine's limits: loopback TCP bandwidth (iperf3, one stream); 4 KiB
#    write+fdatasync IOPS and fdatasync latency (fio, one job); 1 MiB sequential write
#    bandwidth (fio, buffered writes and an fsync at the end, counted in its time). fio
#    runs in the temporary directory that also holds the servers' data (same filesystem).
# 3. etcd: a 3-member cluster on loopback (free ports, default fsync durability),
#    measured by etcd-bench (bench/etcd-bench, etcd's gRPC API): 4 KiB puts of new keys
#    and linearizable 4 KiB gets at each client count, and one client's sequential puts.
#    It is stopped before dfs starts.
# 4. dfs: dfs-bench --spawn (three dfs-server processes, R = 2, fsync on; a fresh cluster
#    per client count): 4 KiB appends, puts of new files and linearizable reads at each
#    client count; then small files, one big put and get (BIG_SIZE) and one client's
#    sequential appends; then dfs-failover.
# 5. Writes DIR/summary.md (one Markdown table of figures and ratios: dfs / etcd,
#    dfs / machine limit; printed at the end too), DIR/throughput.png (throughput against
#    clients, gnuplot), and every tool's raw JSON (DIR/raw) and log (DIR/logs).
#
# Every process it starts is stopped by its PID when it ends, on an error or Ctrl-C too
# (the load generators get SIGINT and stop their own servers), and its data is removed.
#
# Options:
#   --quick      shorter runs for a smoke test (about two minutes after the build):
#                clients 1 8 64, 2 s per workload, BIG_SIZE 64MiB, 2 failover runs,
#                200 keys and files to read
#   --out DIR    where to write the results [default: bench/results/<UTC date>, or
#                bench/results/<UTC date>-quick with --quick]
#   --no-build   use the release binaries already built
# Environment (overrides the defaults of the mode):
#   CLIENTS="1 8 64 256"  DURATION=10s  WARMUP=1s  BIG_SIZE=1GiB  SMALL_FILES=2000
#   SMALL_CLIENTS=64  FAILOVER_RUNS=10  IPERF_SECONDS=5  FIO_SECONDS=10
#   READ_SET=1000 (keys etcd's gets read, files dfs's reads read; dfs's appends spread over
#   as many files)
#   TMPDIR (where the data goes; the disk measured)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'
}

QUICK=0
BUILD=1
OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --no-build) BUILD=0 ;;
    --out)
      [ $# -ge 2 ] || { echo "--out needs a directory" >&2; exit 2; }
      OUT=$2
      shift
      ;;
    --out=*) OUT=${1#--out=} ;;
    -h | --help) usage; exit 0 ;;
    *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

if [ "$QUICK" = 1 ]; then
  MODE=quick
  : "${READ_SET:=200}"
  : "${CLIENTS:=1 8 64}" "${DURATION:=2s}" "${WARMUP:=500ms}" "${BIG_SIZE:=64MiB}"
  : "${SMALL_FILES:=200}" "${FAILOVER_RUNS:=2}" "${IPERF_SECONDS:=2}" "${FIO_SECONDS:=3}"
else
  MODE=full
  : "${READ_SET:=1000}"
  : "${CLIENTS:=1 8 64 256}" "${DURATION:=10s}" "${WARMUP:=1s}" "${BIG_SIZE:=1GiB}"
  : "${SMALL_FILES:=2000}" "${FAILOVER_RUNS:=10}" "${IPERF_SECONDS:=5}" "${FIO_SECONDS:=10}"
fi
: "${SMALL_CLIENTS:=64}"
# etcd's default backend quota is 2 GiB; the put workloads of a full run write about a
# gigabyte of revisions, so give it room (etcd's suggested maximum).
ETCD_QUOTA=$((8 * 1024 * 1024 * 1024))
# How long a server may take to start, or a load generator to stop after SIGINT.
START_LIMIT=60
STOP_LIMIT=30

if [ -z "$OUT" ]; then
  OUT="$ROOT/bench/results/$(date -u +%Y-%m-%d)"
  [ "$MODE" = quick ] && OUT="$OUT-quick"
  [ -e "$OUT" ] && OUT="$OUT-$(date -u +%H%M%S)"
fi
mkdir -p "$OUT/raw" "$OUT/logs"
OUT=$(cd "$OUT" && pwd)
RAW="$OUT/raw"
LOGS="$OUT/logs"

log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

# --- what this script started, stopped on exit --------------------------------------------
WORK=""
CURRENT=""   # the load generator or tool running now
SERVERS=()   # etcd members and the iperf3 server

# Waits until none of the PIDS runs, at most SECONDS; false if one still does.
wait_gone() {
  local seconds=$1
  shift
  local deadline=$((SECONDS + seconds)) pid alive
  while :; do
    alive=0
    for pid in "$@"; do
      kill -0 "$pid" 2>/dev/null && alive=1
    done
    [ "$alive" = 0 ] && return 0
    [ "$SECONDS" -ge "$deadline" ] && return 1
    sleep 0.1
  done
}

# Sends SIGNAL to each of PIDS that runs, waits for them, then SIGKILLs what is left.
stop_pids() {
  local signal=$1
  shift
  [ $# -gt 0 ] || return 0
  local pid
  for pid in "$@"; do
    kill "-$signal" "$pid" 2>/dev/null || true
  done
  if ! wait_gone "$STOP_LIMIT" "$@"; then
    for pid in "$@"; do
      kill -KILL "$pid" 2>/dev/null || true
    done
  fi
  for pid in "$@"; do
    wait "$pid" 2>/dev/null || true
  done
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "$CURRENT" ]; then
    # dfs-bench, dfs-failover and etcd-bench stop their own servers on SIGINT.
    stop_pids INT "$CURRENT"
  fi
  if [ ${#SERVERS[@]} -gt 0 ]; then
    stop_pids TERM "${SERVERS[@]}"
  fi
  if [ -n "$WORK" ]; then
    rm -rf "$WORK"
  fi
  if [ "$rc" != 0 ]; then
    log "stopped (exit $rc); logs in $LOGS"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Runs a command in the background (so a signal to this script is handled at once), its
# stdout to OUTFILE and its stderr to logs/NAME.log; fails the run if it fails.
run() {
  local name=$1 outfile=$2
  shift 2
  "$@" >"$outfile" 2>"$LOGS/$name.log" &
  CURRENT=$!
  local rc=0
  wait "$CURRENT" || rc=$?
  CURRENT=""
  if [ "$rc" != 0 ]; then
    tail -n 20 "$LOGS/$name.log" >&2 || true
    die "$name failed (exit $rc); its log is $LOGS/$name.log"
  fi
}

# N distinct free loopback ports (held at once while chosen).
free_ports() {
  python3 - "$1" <<'EOF'
import socket, sys
held = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in held:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in held))
EOF
}

# Whether something listens on 127.0.0.1:PORT (or on every address).
listening() {
  python3 - "$1" <<'EOF'
import sys
port = int(sys.argv[1])
for table in ("/proc/net/tcp", "/proc/net/tcp6"):
    try:
        lines = open(table).read().splitlines()[1:]
    except OSError:
        continue
    for line in lines:
        f = line.split()
        if f[3] == "0A" and int(f[1].rsplit(":", 1)[1], 16) == port:
            sys.exit(0)
sys.exit(1)
EOF
}

# --- 1. what it needs ------------------------------------------------------------------------
command -v python3 >/dev/null || die "python3 is needed (apt-get install python3)"
MISSING=()
for pair in iperf3:iperf3 fio:fio etcd:etcd-server etcdctl:etcd-client gnuplot:gnuplot-nox; do
  command -v "${pair%%:*}" >/dev/null || MISSING+=("${pair#*:}")
done
if [ ${#MISSING[@]} -gt 0 ]; then
  log "installing ${MISSING[*]} (apt-get)"
  SUDO=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || die "${MISSING[*]} missing, and not root: install them"
    SUDO=sudo
  fi
  $SUDO apt-get update -qq >"$LOGS/apt.log" 2>&1
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${MISSING[@]}" >>"$LOGS/apt.log" 2>&1 ||
    die "apt-get install ${MISSING[*]} failed; see $LOGS/apt.log"
fi

cd "$ROOT"
if [ "$BUILD" = 1 ]; then
  log "building the release binaries (cargo build --release -p dfs -p dfs-etcd-bench --bins)"
  cargo build --release -p dfs -p dfs-etcd-bench --bins >"$LOGS/build.log" 2>&1 || {
    tail -n 30 "$LOGS/build.log" >&2
    die "the build failed; see $LOGS/build.log"
  }
fi
TARGET=$(cargo metadata --no-deps --format-version 1 |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
BIN="$TARGET/release"
for b in dfs-server dfs-bench dfs-failover etcd-bench; do
  [ -x "$BIN/$b" ] || die "no $BIN/$b: build it (cargo build --release -p dfs -p dfs-etcd-bench --bins)"
done

BIG_BYTES=$(python3 - "$BIG_SIZE" <<'EOF'
import re, sys
m = re.fullmatch(r"\s*(\d+)\s*(b|k|kib|m|mib|g|gib)?\s*", sys.argv[1], re.I)
if not m:
    sys.exit(f"BIG_SIZE {sys.argv[1]!r} is not a size such as 64MiB or 1GiB")
shift = {"": 0, "b": 0, "k": 10, "kib": 10, "m": 20, "mib": 20, "g": 30, "gib": 30}
print(int(m.group(1)) << shift[(m.group(2) or "").lower()])
EOF
) || die "bad BIG_SIZE"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/dfs-compare.XXXXXX")
# dfs-bench and dfs-failover put their servers' data in the temporary directory: this one,
# so that everything is on the filesystem fio measures and goes when the run ends.
export TMPDIR="$WORK"
FREE_KIB=$(df -Pk "$WORK" | awk 'NR == 2 { print $4 }')
NEED_KIB=$(((2 * BIG_BYTES >> 10) + 3 * 1024 * 1024))
if [ "$FREE_KIB" -lt "$NEED_KIB" ]; then
  log "warning: $((FREE_KIB >> 10)) MiB free under $WORK; this run may want up to $((NEED_KIB >> 10)) MiB"
fi

log "$MODE run: clients $CLIENTS, $DURATION per workload after $WARMUP, big file $BIG_SIZE"
log "results in $OUT; data in $WORK"

# The machine and the run, for the summary.
python3 - "$WORK" "$MODE" "$CLIENTS" "$DURATION" "$WARMUP" "$BIG_SIZE" "$SMALL_FILES" \
  "$SMALL_CLIENTS" "$FAILOVER_RUNS" "$READ_SET" >"$RAW/machine.json" <<'EOF'
import json, os, platform, subprocess, sys, time
work, mode, clients, duration, warmup, big, small, small_clients, runs, read_set = sys.argv[1:]
def out(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), None)
mem = next((int(l.split()[1]) * 1024 for l in open("/proc/meminfo") if l.startswith("MemTotal")), None)
df = (out("df", "-PT", work) or "").splitlines()[-1:]
def cpu_times():
    fields = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    return sum(fields), fields[3] + fields[4]  # all, idle + iowait
# How busy the CPUs are before this run starts anything: others' work skews every figure.
(total0, idle0) = cpu_times()
time.sleep(2)
(total1, idle1) = cpu_times()
busy = 1 - (idle1 - idle0) / max(total1 - total0, 1)
commit = out("git", "rev-parse", "--short=12", "HEAD")
dirty = bool(out("git", "status", "--porcelain", "--untracked-files=no"))
print(json.dumps({
    "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    "mode": mode, "clients": [int(c) for c in clients.split()], "duration": duration,
    "warmup": warmup, "big_size": big, "small_files": int(small),
    "small_clients": int(small_clients), "failover_runs": int(runs), "read_set": int(read_set),
    "cpu": cpu, "cores": os.cpu_count(), "memory_bytes": mem,
    "kernel": platform.release(), "filesystem": df[0].split() if df else None,
    "loadavg_start": open("/proc/loadavg").read().split()[:3],
    "cpu_busy_before": round(busy, 3),
    "commit": commit, "dirty": dirty,
    "versions": {
        "etcd": (out("etcd", "--version") or "").splitlines()[:1],
        "fio": out("fio", "--version"),
        "iperf3": (out("iperf3", "--version") or "").splitlines()[:1],
        "rustc": out("rustc", "--version"),
    },
}, indent=1))
EOF

# --- 2. the machine's limits ----------------------------------------------------------------
log "loopback TCP bandwidth (iperf3, one stream, ${IPERF_SECONDS} s)"
read -r PORT <<<"$(free_ports 1)"
iperf3 -s -1 -B 127.0.0.1 -p "$PORT" >"$LOGS/iperf3-server.log" 2>&1 &
SERVERS+=("$!")
deadline=$((SECONDS + START_LIMIT))
until listening "$PORT"; do
  kill -0 "${SERVERS[-1]}" 2>/dev/null || die "the iperf3 server exited; see $LOGS/iperf3-server.log"
  [ "$SECONDS" -lt "$deadline" ] || die "the iperf3 server did not listen within ${START_LIMIT} s"
  sleep 0.05
done
run iperf3 "$RAW/iperf3.json" iperf3 -c 127.0.0.1 -p "$PORT" -t "$IPERF_SECONDS" -J
stop_pids TERM "${SERVERS[@]}"
SERVERS=()

mkdir -p "$WORK/fio"
log "4 KiB write+fdatasync (fio, one job, ${FIO_SECONDS} s) in $WORK"
run fio-4k "$RAW/fio-4k-fdatasync.json" fio --name=4k-write-fdatasync --directory="$WORK/fio" \
  --rw=write --bs=4k --fdatasync=1 --size=256M --time_based --runtime="$FIO_SECONDS" \
  --ioengine=sync --output-format=json
rm -rf "$WORK/fio" && mkdir -p "$WORK/fio"
log "1 MiB sequential writes of $BIG_SIZE, buffered, fsync at the end (fio)"
run fio-seq "$RAW/fio-1m-seq.json" fio --name=1m-seq-write-end-fsync --directory="$WORK/fio" \
  --rw=write --bs=1M --size="$BIG_BYTES" --end_fsync=1 --ioengine=sync --output-format=json
rm -rf "$WORK/fio"

# --- 3. etcd ---------------------------------------------------------------------------------
# Starts three members on free ports (new ports if one exits at start-up: a port found free
# can be taken before etcd binds it); sets ETCD_ENDPOINTS.
start_etcd() {
  local attempt i pid ports cluster healthy deadline
  for attempt in 1 2 3; do
    read -r -a ports <<<"$(free_ports 6)"
    cluster="m1=http://127.0.0.1:${ports[3]},m2=http://127.0.0.1:${ports[4]},m3=http://127.0.0.1:${ports[5]}"
    ETCD_ENDPOINTS="127.0.0.1:${ports[0]},127.0.0.1:${ports[1]},127.0.0.1:${ports[2]}"
    for i in 0 1 2; do
      etcd --name "m$((i + 1))" --data-dir "$WORK/etcd/try$attempt-m$((i + 1))" \
        --listen-client-urls "http://127.0.0.1:${ports[i]}" \
        --advertise-client-urls "http://127.0.0.1:${ports[i]}" \
        --listen-peer-urls "http://127.0.0.1:${ports[i + 3]}" \
        --initial-advertise-peer-urls "http://127.0.0.1:${ports[i + 3]}" \
        --initial-cluster "$cluster" --initial-cluster-state new \
        --initial-cluster-token "dfs-compare-$$-$attempt" \
        --quota-backend-bytes "$ETCD_QUOTA" --logger zap --log-outputs stderr \
        >>"$LOGS/etcd-m$((i + 1)).log" 2>&1 &
      SERVERS+=("$!")
    done
    deadline=$((SECONDS + START_LIMIT))
    while [ "$SECONDS" -lt "$deadline" ]; do
      healthy=1
      for pid in "${SERVERS[@]}"; do
        kill -0 "$pid" 2>/dev/null || healthy=exited
      done
      [ "$healthy" = exited ] && break
      if etcdctl --endpoints="$ETCD_ENDPOINTS" --dial-timeout=1s --command-timeout=2s \
        endpoint health >/dev/null 2>&1; then
        return 0
      fi
      sleep 0.1
    done
    log "etcd did not start (attempt $attempt); trying new ports"
    stop_pids TERM "${SERVERS[@]}"
    SERVERS=()
  done
  die "etcd did not start; see $LOGS/etcd-m*.log"
}

log "etcd: starting three members"
start_etcd
etcdctl --endpoints="$ETCD_ENDPOINTS" endpoint status -w json >"$RAW/etcd-status.json" 2>>"$LOGS/etcd-status.log" || true
for c in $CLIENTS; do
  log "etcd: puts and linearizable gets, clients: $c"
  run "etcd-$c" "$RAW/etcd-$c.json" "$BIN/etcd-bench" --endpoints "$ETCD_ENDPOINTS" \
    --workload put,get --clients "$c" --duration "$DURATION" --warmup "$WARMUP" \
    --keys "$READ_SET" --keep --json
done
log "etcd: one client's sequential puts"
run etcd-latency "$RAW/etcd-latency.json" "$BIN/etcd-bench" --endpoints "$ETCD_ENDPOINTS" \
  --workload latency --duration "$DURATION" --warmup "$WARMUP" --keep --json
# Peak memory of each member since it started (VmHWM).
python3 - "${SERVERS[@]}" >"$RAW/etcd-rss.json" <<'EOF'
import json, sys
def hwm(pid):
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
print(json.dumps([{"pid": int(p), "peak_rss_bytes": hwm(p)} for p in sys.argv[1:]]))
EOF
log "etcd: stopping"
stop_pids TERM "${SERVERS[@]}"
SERVERS=()
rm -rf "$WORK/etcd"

# --- 4. dfs ----------------------------------------------------------------------------------
for c in $CLIENTS; do
  log "dfs: appends, puts of new files and linearizable reads, clients: $c"
  run "dfs-$c" "$RAW/dfs-$c.json" "$BIN/dfs-bench" --spawn --server "$BIN/dfs-server" \
    --workload append,put,read --clients "$c" --duration "$DURATION" --warmup "$WARMUP" \
    --files "$READ_SET" --json
done
log "dfs: small files ($SMALL_FILES, $SMALL_CLIENTS clients), a $BIG_SIZE put and get, one client's appends"
run dfs-other "$RAW/dfs-other.json" "$BIN/dfs-bench" --spawn --server "$BIN/dfs-server" \
  --workload small-files,big,latency --clients "$SMALL_CLIENTS" --small-files "$SMALL_FILES" \
  --big-size "$BIG_SIZE" --duration "$DURATION" --warmup "$WARMUP" --json
log "dfs: failover ($FAILOVER_RUNS runs)"
run dfs-failover "$RAW/dfs-failover.json" "$BIN/dfs-failover" --server "$BIN/dfs-server" \
  --runs "$FAILOVER_RUNS" --json

# --- 5. the table and the plot ---------------------------------------------------------------
python3 - <<'EOF' >"$RAW/loadavg-end.json"
import json
print(json.dumps(open("/proc/loadavg").read().split()[:3]))
EOF
python3 "$ROOT/bench/compare_report.py" "$OUT" || die "cannot make the summary"
if gnuplot -e 'set terminal pngcairo' >/dev/null 2>&1; then TERMINAL=pngcairo; else TERMINAL=png; fi
gnuplot -e "terminal='$TERMINAL'" "$OUT/throughput.gp" >"$LOGS/gnuplot.log" 2>&1 ||
  log "warning: gnuplot failed; see $LOGS/gnuplot.log"
cat "$OUT/summary.md"
log "done: $OUT/summary.md, $OUT/throughput.png, raw JSON in $RAW"
