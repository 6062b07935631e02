#!/usr/bin/env bash
# Flash crowd (issue 15): viewers already watch one live stream when a crowd of N more
# joins within one second. Reported per run: the crowd's join time (TCP connect to first
# keyframe on the wire, p50/p99/max), the watching viewers' latency p99 before and during
# the crowd (worst trend window; the target is at most 2x), and whether anyone failed,
# lagged or lost a message. shardcast and nginx-rtmp side by side, alternating per round.
#
#   benches/flash_crowd.sh                                  3000 joining 200 watching, 2 rounds
#   benches/flash_crowd.sh --crowd 1000 --rounds 1 --servers shardcast
#   benches/flash_crowd.sh --crowd-process                  the crowd in a second generator
#   options: --crowd N --watching V --rounds N --duration S --crowd-at S --servers LIST
#            --crowd-process [--crowd-cpu LIST]
#
# Each server on CPU 1 (shardcast: one shard, `server.cpus = [1]`; nginx-rtmp: one worker,
# taskset), the load generator on CPU 0 with one thread: 200 watching viewers (every one
# verifying latency and loss), the crowd at 10 s, 25 s runs, one 2.5 Mbit/s synthetic
# stream with a 2 s GOP. Needs nginx and libnginx-mod-rtmp for the nginx runs (Debian
# packages). Only 127.0.0.1 is used; every server is stopped however the script exits.
#
# --crowd-process: the crowd runs in its own shardcast-load process (one thread, on
# --crowd-cpu, default 0), started by the script at --crowd-at, so the watchers' latency no
# longer includes their own generator thread handling 3,000 joins. shardcast-load always
# publishes, so that process also publishes an unwatched stream (crowdpub-0) and its viewers
# play the watchers' stream (--play-url). The watchers' p99 before / during comes from their
# latency trend, with the crowd's start taken from the script's clock.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CROWD=3000
WATCHING=200
ROUNDS=2
DURATION=25
CROWD_AT=10
SERVERS="shardcast nginx"
CROWD_PROCESS=0
CROWD_CPU=0
while [ $# -gt 0 ]; do
    case "$1" in
        --crowd) CROWD="$2"; shift 2 ;;
        --watching) WATCHING="$2"; shift 2 ;;
        --rounds) ROUNDS="$2"; shift 2 ;;
        --duration) DURATION="$2"; shift 2 ;;
        --crowd-at) CROWD_AT="$2"; shift 2 ;;
        --servers) SERVERS="$2"; shift 2 ;;
        --crowd-process) CROWD_PROCESS=1; shift ;;
        --crowd-cpu) CROWD_CPU="$2"; shift 2 ;;
        -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done

if [ "$CROWD_PROCESS" = 1 ] && [ $((DURATION - CROWD_AT - 1)) -lt 3 ]; then
    echo "--crowd-process needs --duration at least --crowd-at + 4 s (the crowd process stops 1 s before the watchers)" >&2
    exit 2
fi

cd "$REPO"
PORT=19800
ADMIN_PORT=""
# shellcheck source=benches/side_by_side.sh
source "$REPO/benches/side_by_side.sh"

# The watchers in one process, the crowd in another started at --crowd-at; the crowd's
# report is JSON.crowd.json and its start (seconds after the watchers') JSON.crowd_at.
run_crowd_process() { # server -> json path
    local out="$WORK/$1-$RANDOM.json" t0 watchers crowd
    start_server "$1"
    t0=$(date +%s.%N)
    taskset -c 0 "$LOAD" --url "rtmp://127.0.0.1:$PORT/live/crowd-{n}" --streams 1 \
        --viewers "$WATCHING" --verify-every 1 --ramp 200 \
        --duration "${DURATION}s" --threads 1 --no-progress \
        --server-pid "$MEASURED" --json "$out" >"$out.txt" 2>&1 &
    watchers=$!
    track "$watchers"
    sleep "$(python3 -c "import time; print(max(0, $t0 + $CROWD_AT - time.time()))")"
    python3 -c "import time; print(time.time() - $t0)" >"$out.crowd_at"
    # Ends a second before the watchers, so their publisher is still there when it stops.
    taskset -c "$CROWD_CPU" "$LOAD" --url "rtmp://127.0.0.1:$PORT/live/crowdpub-{n}" \
        --play-url "rtmp://127.0.0.1:$PORT/live/crowd-{n}" --streams 1 \
        --viewers "$CROWD" --ramp "$CROWD" --verify-every 0 \
        --duration "$((DURATION - CROWD_AT - 1))s" --threads 1 --no-progress \
        --json "$out.crowd.json" >"$out.crowd.txt" 2>&1 &
    crowd=$!
    track "$crowd"
    wait "$crowd" || true
    untrack "$crowd"
    wait "$watchers" || true
    untrack "$watchers"
    stop_server
    echo "$out"
}

run() { # server -> json path
    if [ "$CROWD_PROCESS" = 1 ]; then run_crowd_process "$1"; return; fi
    local out="$WORK/$1-$RANDOM.json"
    start_server "$1"
    tracked taskset -c 0 "$LOAD" --url "rtmp://127.0.0.1:$PORT/live/crowd-{n}" --streams 1 \
        --viewers "$WATCHING" --verify-every 1 --ramp 200 \
        --crowd "$CROWD" --crowd-at "${CROWD_AT}s" \
        --duration "${DURATION}s" --threads 1 --no-progress \
        --server-pid "$MEASURED" --json "$out" >"$out.txt" 2>&1 || true
    stop_server
    echo "$out"
}

row() { # label json
    python3 - "$@" <<'PY'
import json, os, sys
label, path = sys.argv[1], sys.argv[2]
try:
    r = json.load(open(path))
except Exception as e:
    print(f"| {label} | failed: {e} | | | | | |"); sys.exit()
c = r.get("crowd") or {}
f = c.get("first_keyframe_ms") or {}
crowd_failed = 0
if os.path.exists(path + ".crowd_at"):
    # The crowd ran in its own process: its joins are that report's, and the watchers'
    # before / during are worked out from their trend as the generator does (report.rs,
    # Crowd::of) with the script's crowd time.
    at = float(open(path + ".crowd_at").read())
    try:
        cr = json.load(open(path + ".crowd.json"))
        f = cr.get("first_keyframe_ms") or {}
        crowd_failed = cr["viewers"]["failed"] + cr["viewers"]["lagging"]
    except Exception as e:
        print(f"| {label} | crowd process failed: {e} | | | | | |"); sys.exit()
    t = r.get("latency_trend") or {}
    steady, until = t.get("steady_from_s") or 0.0, at + 1.0 + 5.0
    def worst(keep):
        p = [w["p99"] for w in t.get("windows", []) if w["count"] > 0 and keep(w)]
        return max(p) if p else None
    before = worst(lambda w: w["start_s"] >= steady and w["start_s"] + w["span_s"] <= at)
    during = worst(lambda w: w["start_s"] + w["span_s"] > at and w["start_s"] < until)
    c = {"before_p99_ms": before, "during_p99_ms": during,
         "spike_ratio": during / before if before and during is not None else None}
fmt = lambda v: "-" if v is None else f"{v:.1f}"
v = r["viewers"]
failed = f"{v['failed']}" + (f" (crowd: {crowd_failed} failed or lagging)" if crowd_failed else "")
print(f"| {label} | {f.get('count', 0)} | {fmt(f.get('p50'))} | {fmt(f.get('p99'))} | {fmt(f.get('max'))} "
      f"| {fmt(c.get('before_p99_ms'))} / {fmt(c.get('during_p99_ms'))} "
      f"| {'-' if c.get('spike_ratio') is None else format(c['spike_ratio'], '.2f')} "
      f"| {failed} / {v['lagging']} / {r['messages']['lost']} |")
PY
}

echo "# Flash crowd ($(git -C "$REPO" rev-parse --short HEAD), $(date -u +%Y-%m-%dT%H:%MZ)): $CROWD viewers join $WATCHING watching at ${CROWD_AT} s, ${DURATION} s runs, $ROUNDS rounds"
echo
if [ "$CROWD_PROCESS" = 1 ]; then
    echo "The crowd runs in its own shardcast-load process (CPU $CROWD_CPU; the watchers' on CPU 0), which also publishes one unwatched stream; the watchers' before / during are from their latency trend around the crowd's start on the script's clock."
    echo
fi
echo "| run | crowd joined | join p50 ms | join p99 ms | join max ms | watching latency p99 before / during ms | spike | failed / lagging / lost |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"
for round in $(seq "$ROUNDS"); do
    order="$SERVERS"
    [ $((round % 2)) -eq 0 ] && order="$(echo "$SERVERS" | tr ' ' '\n' | tac | tr '\n' ' ')"
    for server in $order; do
        # In the background, so that a signal stops the script (and its servers) at once.
        run "$server" >"$WORK/run.out" &
        wait $!
        json=$(cat "$WORK/run.out")
        row "$server, round $round" "$json"
    done
done
