#!/usr/bin/env bash
# Latency added by one edge hop (issue 13): the same load generator run twice, side by side,
# alternating per round: its viewers play from the origin the publisher pushes to, then from
# an edge that pulls the stream from that origin. Reported: latency p50/p99/max (publisher
# send to viewer receive, every viewer verifying), the difference edge - origin, and loss.
#
#   benches/edge_hop.sh                          200 viewers, 15 s runs, 2 rounds
#   benches/edge_hop.sh --viewers 500 --rounds 3
#
# Origin and edge: one shard each, both on CPU 1 (the edge's work is what the hop adds); the
# load generator on CPU 0 with one thread; one 2.5 Mbit/s synthetic stream. Only 127.0.0.1.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VIEWERS=200
ROUNDS=2
DURATION=15
while [ $# -gt 0 ]; do
    case "$1" in
        --viewers) VIEWERS="$2"; shift 2 ;;
        --rounds) ROUNDS="$2"; shift 2 ;;
        --duration) DURATION="$2"; shift 2 ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done

source "$REPO/benches/bench_setup.sh"

ORIGIN=19820
EDGE=19821
shardcast_config "$WORK/origin.toml" "$ORIGIN" "" "" ""
shardcast_config "$WORK/edge.toml" "$EDGE" "" "" "pull = [\"rtmp://127.0.0.1:$ORIGIN/live\"]"

run() { # origin|edge -> json
    local out="$WORK/$1-$RANDOM.json"
    local origin edge
    taskset -c 1 "$BIN" --config "$WORK/origin.toml" --shards 1 >"$WORK/origin.log" 2>&1 &
    origin=$!
    track "$origin"
    taskset -c 1 "$BIN" --config "$WORK/edge.toml" --shards 1 >"$WORK/edge.log" 2>&1 &
    edge=$!
    track "$edge"
    wait_port "$ORIGIN" && wait_port "$EDGE"
    local play="rtmp://127.0.0.1:$ORIGIN/live/hop-{n}"
    [ "$1" = edge ] && play="rtmp://127.0.0.1:$EDGE/live/hop-{n}"
    tracked taskset -c 0 "$LOAD" --url "rtmp://127.0.0.1:$ORIGIN/live/hop-{n}" --play-url "$play" \
        --viewers "$VIEWERS" --verify-every 1 --ramp 200 --duration "${DURATION}s" \
        --threads 1 --no-progress --json "$out" >"$out.txt" 2>&1 || true
    for p in "$origin" "$edge"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; untrack "$p"; done
    sleep 1
    echo "$out"
}

echo "# Edge hop latency ($(git -C "$REPO" rev-parse --short HEAD), $(date -u +%Y-%m-%dT%H:%MZ)): $VIEWERS viewers, ${DURATION} s runs, $ROUNDS rounds"
echo
echo "| round | viewers play from | latency p50 ms | p99 ms | max ms | p99 edge - origin ms | lost / lagging |"
echo "|---|---|---:|---:|---:|---:|---:|"
for round in $(seq "$ROUNDS"); do
    if [ $((round % 2)) -eq 1 ]; then order="origin edge"; else order="edge origin"; fi
    declare -A out=()
    for where in $order; do out[$where]=$(run "$where"); done
    python3 - "$round" "${out[origin]}" "${out[edge]}" <<'PY'
import json, sys
round_, o, e = sys.argv[1], json.load(open(sys.argv[2])), json.load(open(sys.argv[3]))
for name, r in (("origin", o), ("edge (one hop)", e)):
    l = r["latency_ms"]
    diff = e["latency_ms"]["p99"] - o["latency_ms"]["p99"]
    print(f"| {round_} | {name} | {l['p50']:.2f} | {l['p99']:.2f} | {l['max']:.2f} | "
          f"{diff:.2f} | {r['messages']['lost']} / {r['viewers']['lagging']} |" if name != "origin" else
          f"| {round_} | {name} | {l['p50']:.2f} | {l['p99']:.2f} | {l['max']:.2f} | | {r['messages']['lost']} / {r['viewers']['lagging']} |")
PY
    unset out
done
