#!/usr/bin/env bash
# Ingest-heavy load (issue 15) counted in events rather than CPU time: 300 publishers at
# 2.5 Mbit/s with one viewer each against one shard, and `perf stat` over 5 s of steady state
# (from 7 s in) for context switches, socket recvs, io_uring_enter calls, io_uring
# submissions (all, TIMEOUT = opcode 11, WRITE = opcode 23) and calls of the relay's
# `Shard::handle_timeout` (a uprobe; the timer task's wake-ups). Counts do not depend on how
# busy the machine is the way CPU seconds do (but see RESULTS.md: how often the shard runs
# dry does). Binaries alternate per round, so before/after builds run side by side:
#
#   cp target/release/shardcast /tmp/shardcast-before   # ... change, rebuild ...
#   benches/ingest_ops.sh 3 /tmp/shardcast-before target/release/shardcast
#
# The server on CPU 1, the load generator (target/release/shardcast-load, one thread) on
# CPU 0; 127.0.0.1:19861. Needs root for perf's tracepoints and uprobes.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROUNDS="${1:?rounds}"
shift
TMP="$(mktemp -d)"
cat > "$TMP/ingest.toml" <<'TOML'
[server]
cpus = [1]
listen = "127.0.0.1:19861"
[admin]
listen = ""
[http]
listen = ""
[log]
filter = "warn"
[app.live]
TOML
SP=
PROBES=()
cleanup() {
  [ -n "$SP" ] && kill "$SP" 2>/dev/null
  for p in "${PROBES[@]}"; do perf probe -q -d "$p" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT

probe() { # binary -> event name for its handle_timeout uprobe, or nothing
  local sym name
  sym="$(nm "$1" | awk '/Shard14handle_timeout/ {print $3; exit}')"
  name="ht_$(sha1sum "$1" | cut -c1-8)"
  [ -n "$sym" ] || return 0
  perf probe -q -x "$1" -d "probe_shardcast:$name" 2>/dev/null || true
  perf probe -q -x "$1" --add "$name=$sym" 2>/dev/null && echo "probe_shardcast:$name" || true
}

run() {
  local bin="$1" ev
  ev="$(probe "$bin")"
  [ -n "$ev" ] && PROBES+=("$ev")
  taskset -c 1 "$bin" --config "$TMP/ingest.toml" --shards 1 > "$TMP/server.log" 2>&1 &
  SP=$!
  sleep 1
  taskset -c 0 "$REPO/target/release/shardcast-load" --url 'rtmp://127.0.0.1:19861/live/ing-{n}' \
    --streams 300 --viewers 1 --ramp 200 --duration 16s --threads 1 --no-progress \
    --server-pid "$SP" > "$TMP/load.txt" 2>&1 &
  local lp=$!
  sleep 7
  perf stat -x, -e task-clock,context-switches,sock:sock_recv_length \
    -e syscalls:sys_enter_io_uring_enter ${ev:+-e "$ev"} \
    -e io_uring:io_uring_submit_req \
    -e io_uring:io_uring_submit_req --filter 'opcode == 11' \
    -e io_uring:io_uring_submit_req --filter 'opcode == 23' \
    -p "$SP" -- sleep 5 2>&1 |
    awk -F, -v ev="$ev" 'BEGIN { n = 0 }
      { v[$3 == "io_uring:io_uring_submit_req" ? "sqe" (n++) : $3] = $1 }
      END {
        r = v["sock:sock_recv_length"]
        printf "task-clock-ms=%d cs=%d recv=%d enter=%d sqe=%d timeout=%d write=%d timer-wakes=%s sqe/recv=%.2f enter/recv=%.2f ",
          v["task-clock"], v["context-switches"], r, v["syscalls:sys_enter_io_uring_enter"],
          v["sqe0"], v["sqe1"], v["sqe2"], (ev == "" ? "-" : v[ev]), v["sqe0"] / r,
          v["syscalls:sys_enter_io_uring_enter"] / r }'
  wait "$lp" || true
  kill "$SP"
  wait "$SP" 2>/dev/null || true
  SP=
  echo "cpu-s/GB(noisy)=$(awk '/cpu s per GB/ {print $NF}' "$TMP/load.txt")"
}

for _ in $(seq "$ROUNDS"); do
  for bin in "$@"; do
    echo -n "$bin: "
    run "$bin"
  done
done
