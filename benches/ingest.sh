#!/usr/bin/env bash
# Ingest-heavy host (issue 15): many publishers with one viewer each. Reported per run:
# server CPU-seconds per received GB (each stream is delivered once, so the load generator's
# CPU per delivered GB is the same bytes), lost and lagging, and for shardcast how late
# publishers were read (`shardcast_ingest_read_delay_seconds` from /metrics: the share of
# messages read within 5, 10 and 25 ms of their publisher's pace, and the slowest bucket
# reached). shardcast and nginx-rtmp side by side, alternating per round.
#
#   benches/ingest.sh                                     300 publishers at 2.5 Mbit/s, 2 rounds
#   benches/ingest.sh --publishers 100 --rounds 1 --servers shardcast
#
# Each server on CPU 1 (shardcast: one shard; nginx-rtmp: one worker, taskset), the load
# generator on CPU 0 with one thread; 20 s runs. Needs nginx and libnginx-mod-rtmp for the
# nginx runs. Only 127.0.0.1 is used; every server is stopped however the script exits.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PUBLISHERS=300
BITRATE=2500k
ROUNDS=2
DURATION=20
SERVERS="shardcast nginx"
while [ $# -gt 0 ]; do
    case "$1" in
        --publishers) PUBLISHERS="$2"; shift 2 ;;
        --bitrate) BITRATE="$2"; shift 2 ;;
        --rounds) ROUNDS="$2"; shift 2 ;;
        --duration) DURATION="$2"; shift 2 ;;
        --servers) SERVERS="$2"; shift 2 ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done

cd "$REPO"
PORT=19810
ADMIN_PORT=19811
# shellcheck source=benches/side_by_side.sh
source "$REPO/benches/side_by_side.sh"

run() { # server -> json path
    local out="$WORK/$1-$RANDOM.json"
    start_server "$1"
    taskset -c 0 "$LOAD" --url "rtmp://127.0.0.1:$PORT/live/ingest-{n}" \
        --streams "$PUBLISHERS" --viewers 1 --bitrate "$BITRATE" --ramp 200 \
        --duration "${DURATION}s" --threads 1 --no-progress \
        --server-pid "$MEASURED" --json "$out" >"$out.txt" 2>&1 || true
    if [ "$1" = shardcast ]; then
        curl -s "http://127.0.0.1:$ADMIN_PORT/metrics" >"$out.metrics" || true
    fi
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
    print(f"| {label} | failed: {e} | | | | |"); sys.exit()
s = r.get("server") or {}
cpu = s.get("cpu_seconds_per_gb")
delay = "-"
m = path + ".metrics"
if os.path.exists(m):
    buckets = {}
    for line in open(m):
        if line.startswith("shardcast_ingest_read_delay_seconds_bucket"):
            le = line.split('le="')[1].split('"')[0]
            buckets[le] = float(line.split()[-1])
    total = buckets.get("+Inf", 0)
    if total:
        share = lambda le: 100 * buckets.get(le, 0) / total
        slowest = next((le for le, n in buckets.items() if n >= total), "+Inf")
        delay = f"{share('0.005'):.2f} / {share('0.01'):.2f} / {share('0.025'):.2f} % (all by {slowest} s)"
v = r["viewers"]
print(f"| {label} | {'-' if cpu is None else format(cpu, '.3f')} | {r['delivered']['gbit_per_s']:.2f} "
      f"| {delay} | {v['failed']} / {v['lagging']} / {r['messages']['lost']} |")
PY
}

echo "# Ingest-heavy ($(git -C "$REPO" rev-parse --short HEAD), $(date -u +%Y-%m-%dT%H:%MZ)): $PUBLISHERS publishers at $BITRATE, 1 viewer each, ${DURATION} s runs, $ROUNDS rounds"
echo
echo "| run | server CPU-s/GB | Gbit/s delivered | read within 5 / 10 / 25 ms of pace | failed / lagging / lost |"
echo "|---|---:|---:|---:|---:|"
for round in $(seq "$ROUNDS"); do
    order="$SERVERS"
    [ $((round % 2)) -eq 0 ] && order="$(echo "$SERVERS" | tr ' ' '\n' | tac | tr '\n' ' ')"
    for server in $order; do
        json=$(run "$server")
        row "$server, round $round" "$json"
    done
done
