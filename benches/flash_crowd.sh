#!/usr/bin/env bash
# Flash crowd (issue 15): viewers already watch one live stream when a crowd of N more
# joins within one second. Reported per run: the crowd's join time (TCP connect to first
# keyframe on the wire, p50/p99/max), the watching viewers' latency p99 before and during
# the crowd (worst trend window; the target is at most 2x), and whether anyone failed,
# lagged or lost a message. shardcast and nginx-rtmp side by side, alternating per round.
#
#   benches/flash_crowd.sh                                  3000 joining 200 watching, 2 rounds
#   benches/flash_crowd.sh --crowd 1000 --rounds 1 --servers shardcast
#
# Each server on CPU 1 (shardcast: one shard, `server.cpus = [1]`; nginx-rtmp: one worker,
# taskset), the load generator on CPU 0 with one thread: 200 watching viewers (every one
# verifying latency and loss), the crowd at 10 s, 25 s runs, one 2.5 Mbit/s synthetic
# stream with a 2 s GOP. Needs nginx and libnginx-mod-rtmp for the nginx runs (Debian
# packages). Only 127.0.0.1 is used; every server is stopped however the script exits.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CROWD=3000
WATCHING=200
ROUNDS=2
DURATION=25
CROWD_AT=10
SERVERS="shardcast nginx"
while [ $# -gt 0 ]; do
    case "$1" in
        --crowd) CROWD="$2"; shift 2 ;;
        --watching) WATCHING="$2"; shift 2 ;;
        --rounds) ROUNDS="$2"; shift 2 ;;
        --duration) DURATION="$2"; shift 2 ;;
        --crowd-at) CROWD_AT="$2"; shift 2 ;;
        --servers) SERVERS="$2"; shift 2 ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done

cd "$REPO"
PORT=19800
ADMIN_PORT=""
# shellcheck source=benches/side_by_side.sh
source "$REPO/benches/side_by_side.sh"

run() { # server -> json path
    local out="$WORK/$1-$RANDOM.json"
    start_server "$1"
    taskset -c 0 "$LOAD" --url "rtmp://127.0.0.1:$PORT/live/crowd-{n}" --streams 1 \
        --viewers "$WATCHING" --verify-every 1 --ramp 200 \
        --crowd "$CROWD" --crowd-at "${CROWD_AT}s" \
        --duration "${DURATION}s" --threads 1 --no-progress \
        --server-pid "$MEASURED" --json "$out" >"$out.txt" 2>&1 || true
    stop_server
    echo "$out"
}

row() { # label json
    python3 - "$@" <<'PY'
import json, sys
label, path = sys.argv[1], sys.argv[2]
try:
    r = json.load(open(path))
except Exception as e:
    print(f"| {label} | failed: {e} | | | | | |"); sys.exit()
c = r.get("crowd") or {}
f = c.get("first_keyframe_ms") or {}
fmt = lambda v: "-" if v is None else f"{v:.1f}"
v = r["viewers"]
print(f"| {label} | {f.get('count', 0)} | {fmt(f.get('p50'))} | {fmt(f.get('p99'))} | {fmt(f.get('max'))} "
      f"| {fmt(c.get('before_p99_ms'))} / {fmt(c.get('during_p99_ms'))} "
      f"| {'-' if c.get('spike_ratio') is None else format(c['spike_ratio'], '.2f')} "
      f"| {v['failed']} / {v['lagging']} / {r['messages']['lost']} |")
PY
}

echo "# Flash crowd ($(git -C "$REPO" rev-parse --short HEAD), $(date -u +%Y-%m-%dT%H:%MZ)): $CROWD viewers join $WATCHING watching at ${CROWD_AT} s, ${DURATION} s runs, $ROUNDS rounds"
echo
echo "| run | crowd joined | join p50 ms | join p99 ms | join max ms | watching latency p99 before / during ms | spike | failed / lagging / lost |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"
for round in $(seq "$ROUNDS"); do
    order="$SERVERS"
    [ $((round % 2)) -eq 0 ] && order="$(echo "$SERVERS" | tr ' ' '\n' | tac | tr '\n' ' ')"
    for server in $order; do
        json=$(run "$server")
        row "$server, round $round" "$json"
    done
done
