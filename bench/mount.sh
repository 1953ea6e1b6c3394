#!/usr/bin/env bash
# The FUSE mount's throughput next to the CLI's, on one machine.
#
#   bench/mount.sh [--size MiB] [--files N] [--out FILE]
#
# Starts `dfs-server dev` (three nodes in one process, R = 2, fsync on) in a scratch
# directory, mounts it with `dfs-client mount` (default settings), and measures, each on
# files of its own:
#   1. a sequential write of SIZE MiB: `dfs-client put` against `dd bs=1M conv=fsync` into
#      the mount (the time includes the close: the data is acknowledged by the cluster);
#   2. a sequential read of SIZE MiB: `dfs-client read` against `dd bs=1M` out of the
#      mount, after the kernel's page cache was dropped;
#   3. N files of 4 KiB: `dfs-client put` of each (one process per file, as a script
#      would) against `cp -r` of the same tree into the mount;
#   4. fio, 4 KiB random writes with an fsync at the end, on a 16 MiB file in the mount.
# Prints a Markdown table (and writes it to FILE with --out). Stops what it started, by
# PID, and unmounts its own mount point only. Needs root (FUSE, drop_caches), fio, dd.
set -euo pipefail

SIZE_MIB=256
FILES=1000
OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --size) SIZE_MIB=$2; shift 2 ;;
    --files) FILES=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/dfs-mount-bench.XXXXXX)
SERVER_PID=""
MOUNT_PID=""

log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "$MOUNT_PID" ] && kill -0 "$MOUNT_PID" 2>/dev/null; then
    kill -TERM "$MOUNT_PID" 2>/dev/null || true
    wait "$MOUNT_PID" 2>/dev/null || true
  fi
  if grep -q " $WORK/mnt " /proc/self/mountinfo 2>/dev/null; then
    umount -l "$WORK/mnt" || true
  fi
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Waits up to SECONDS for COMMAND to succeed.
wait_for() {
  local seconds=$1
  shift
  local deadline=$((SECONDS + seconds))
  until "$@"; do
    [ "$SECONDS" -ge "$deadline" ] && return 1
    sleep 0.1
  done
}

now() { date +%s.%N; }
# MB/s for BYTES moved between START and END.
rate() { python3 -c "import sys; b,s,e=map(float,sys.argv[1:]); print(f'{b/(e-s)/1e6:.0f}')" "$1" "$2" "$3"; }
# Operations per second for N done between START and END.
per_second() { python3 -c "import sys; n,s,e=map(float,sys.argv[1:]); print(f'{n/(e-s):.0f}')" "$1" "$2" "$3"; }

log "building release binaries"
cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml" --bin dfs-server --bin dfs-client
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
command -v fio >/dev/null || { echo "fio is missing (apt-get install fio)" >&2; exit 1; }

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# dev serves PORT, PORT+1000 and PORT+2000: take a port low enough for that.
PORT=$(( (PORT % 20000) + 20000 ))
SERVERS="127.0.0.1:$PORT,127.0.0.1:$((PORT + 1000)),127.0.0.1:$((PORT + 2000))"
log "starting dfs-server dev on $SERVERS"
"$BIN/dfs-server" dev --data-dir "$WORK/data" --port "$PORT" >"$WORK/server.out" 2>"$WORK/server.log" &
SERVER_PID=$!
wait_for 60 test -s "$WORK/data/dev-token" || { cat "$WORK/server.log" >&2; exit 1; }
export DFS_TOKEN
DFS_TOKEN=$(cat "$WORK/data/dev-token")
cli() { "$BIN/dfs-client" --servers "$SERVERS" "$@"; }
wait_for 60 cli status >/dev/null 2>&1

mkdir -p "$WORK/mnt"
"$BIN/dfs-client" --servers "$SERVERS" mount "$WORK/mnt" 2>"$WORK/mount.log" &
MOUNT_PID=$!
wait_for 30 grep -q " $WORK/mnt " /proc/self/mountinfo || { cat "$WORK/mount.log" >&2; exit 1; }

BYTES=$((SIZE_MIB * 1024 * 1024))
head -c "$BYTES" /dev/urandom >"$WORK/big"
mkdir -p "$WORK/small"
for i in $(seq 1 "$FILES"); do head -c 4096 /dev/urandom >"$WORK/small/f$i"; done

log "sequential write, $SIZE_MIB MiB"
s=$(now); cli put bench/cli-big "$WORK/big" >/dev/null; e=$(now)
cli_write=$(rate "$BYTES" "$s" "$e")
s=$(now); dd if="$WORK/big" of="$WORK/mnt/mount-big" bs=1M conv=fsync status=none; e=$(now)
mount_write=$(rate "$BYTES" "$s" "$e")

log "sequential read, $SIZE_MIB MiB"
sync; echo 3 >/proc/sys/vm/drop_caches
s=$(now); cli read bench/cli-big >/dev/null; e=$(now)
cli_read=$(rate "$BYTES" "$s" "$e")
sync; echo 3 >/proc/sys/vm/drop_caches
s=$(now); dd if="$WORK/mnt/mount-big" of=/dev/null bs=1M status=none; e=$(now)
mount_read=$(rate "$BYTES" "$s" "$e")
cmp <(cli read mount-big) "$WORK/big" || { echo "the mount's file differs from what was written" >&2; exit 1; }

log "$FILES files of 4 KiB"
s=$(now)
for i in $(seq 1 "$FILES"); do cli put "bench/small/f$i" "$WORK/small/f$i" >/dev/null; done
e=$(now)
cli_small=$(per_second "$FILES" "$s" "$e")
s=$(now); cp -r "$WORK/small" "$WORK/mnt/small"; e=$(now)
mount_small=$(per_second "$FILES" "$s" "$e")

log "fio 4 KiB random writes, 16 MiB file"
fio --name=randwrite --filename="$WORK/mnt/fio-file" --rw=randwrite --bs=4k --size=16m \
  --ioengine=psync --end_fsync=1 --output-format=json >"$WORK/fio.json" 2>"$WORK/fio.log"
fio_iops=$(python3 -c "import json,sys; j=json.load(open(sys.argv[1])); print(f\"{j['jobs'][0]['write']['iops']:.0f}\")" "$WORK/fio.json")

table=$(cat <<EOF
| measure | dfs-client (CLI) | the mount |
|---|---|---|
| sequential write, $SIZE_MIB MiB (put / dd bs=1M conv=fsync) | $cli_write MB/s | $mount_write MB/s |
| sequential read, $SIZE_MIB MiB, cold page cache (read / dd bs=1M) | $cli_read MB/s | $mount_read MB/s |
| $FILES files of 4 KiB (put per file / cp -r) | $cli_small files/s | $mount_small files/s |
| fio 4 KiB random writes on a 16 MiB file, fsync at the end | — | $fio_iops IOPS |
EOF
)
echo "$table"
[ -n "$OUT" ] && echo "$table" >"$OUT"
exit 0
