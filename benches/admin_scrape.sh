#!/usr/bin/env bash
# What scraping /metrics costs while viewers play (issue 10: "scraping /metrics once a second
# while 2,000 viewers play costs at most 1 % of the server's CPU").
#
#   benches/admin_scrape.sh                      2000 viewers, 30 s runs, 3 rounds
#   benches/admin_scrape.sh --viewers 500 --duration 10 --rounds 1
#   benches/admin_scrape.sh --listings   the scraper also lists every stream and client
#                                        (/api/v1/streams, /api/v1/clients) every 5th second
#
# One shardcast shard pinned to CPU 1, the load generator (and the scraper) on CPU 0. Each
# round runs the same load twice, alternating which goes first: once with nobody scraping,
# once with a scraper asking /metrics once a second (with --listings, also /api/v1/streams
# and /api/v1/clients every 5th second). It reports the server's CPU seconds in each run, the
# admin thread's own CPU seconds, and the shard thread's; the cost of scraping is the
# difference in the server's CPU between the paired runs, and (less noisy) the admin
# thread's CPU plus the shard's snapshot work, as a share of the server's CPU.
# Only 127.0.0.1 is targeted; the server is stopped however the script exits.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VIEWERS=2000
DURATION=30
ROUNDS=3
LISTINGS=0
PORT=19640
ADMIN=19641
while [ $# -gt 0 ]; do
    case "$1" in
        --viewers) VIEWERS="$2"; shift 2 ;;
        --duration) DURATION="$2"; shift 2 ;;
        --rounds) ROUNDS="$2"; shift 2 ;;
        --listings) LISTINGS=1; shift ;;
        -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done

cd "$REPO"
cargo build --release -p shardcast -p shardcast-load >/dev/null 2>&1
BIN="$REPO/target/release/shardcast"
LOAD="$REPO/target/release/shardcast-load"
WORK="$(mktemp -d)"
SERVER=""
cleanup() { [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

cat >"$WORK/shardcast.toml" <<EOF
[server]
cpus = [1]
[admin]
listen = "127.0.0.1:$ADMIN"
[http]
listen = ""
[app.live]
EOF

# CPU seconds of threads, from the scheduler's nanosecond run times (/proc/.../schedstat;
# the clock-tick counters of /proc/.../stat are too coarse for a scrape). thread_stats lists
# a process's threads whose name starts with $2 (glommio names an executor's threads
# "<name>-<id>"), or all of them.
cpu_of() { cat "$@" | awk '{ s += $1 } END { printf "%.4f", s / 1e9 }'; }
thread_stats() {
    for t in /proc/"$1"/task/*; do
        if [ -z "${2:-}" ] || grep -q "^$2-" "$t/comm"; then echo "$t/schedstat"; fi
    done
}

run_once() { # $1 = scrape|quiet ; prints "server admin shard"
    local mode="$1"
    taskset -c 1 "$BIN" --config "$WORK/shardcast.toml" --listen "127.0.0.1:$PORT" --shards 1 --log warn &
    SERVER=$!
    for _ in $(seq 100); do curl -sf "127.0.0.1:$ADMIN/readyz" >/dev/null && break; sleep 0.05; done
    local admin_stat shard_stat all_stat
    all_stat="$(thread_stats "$SERVER")"
    admin_stat="$(thread_stats "$SERVER" admin)"
    shard_stat="$(thread_stats "$SERVER" shard-0)"
    local s0 a0 h0 s1 a1 h1
    s0=$(cpu_of $all_stat); a0=$(cpu_of $admin_stat); h0=$(cpu_of $shard_stat)
    local scraper=""
    if [ "$mode" = scrape ]; then
        (
            i=0
            while :; do
                curl -s "127.0.0.1:$ADMIN/metrics" >/dev/null
                if [ "$LISTINGS" = 1 ] && [ $((i % 5)) -eq 0 ]; then
                    curl -s "127.0.0.1:$ADMIN/api/v1/streams" >/dev/null
                    curl -s "127.0.0.1:$ADMIN/api/v1/clients?count=10000" >/dev/null
                fi
                i=$((i + 1))
                sleep 1
            done
        ) &
        scraper=$!
        taskset -p -c 0 "$scraper" >/dev/null
    fi
    taskset -c 0 "$LOAD" --url "rtmp://127.0.0.1:$PORT/live/load-{n}" --streams 1 \
        --viewers "$VIEWERS" --ramp 1000 --duration "${DURATION}s" --threads 1 --no-progress \
        --json "$WORK/load-$mode.json" >"$WORK/load-$mode.txt" 2>&1 || true
    [ -n "$scraper" ] && { kill "$scraper"; wait "$scraper" 2>/dev/null || true; }
    s1=$(cpu_of $all_stat); a1=$(cpu_of $admin_stat); h1=$(cpu_of $shard_stat)
    kill "$SERVER"; wait "$SERVER" 2>/dev/null || true; SERVER=""
    local lagging
    lagging=$(python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(r.get('viewers',{}).get('lagging', r.get('lagging','?')))" "$WORK/load-$mode.json" 2>/dev/null || echo "?")
    echo "$(echo "$s1 - $s0" | bc) $(echo "$a1 - $a0" | bc) $(echo "$h1 - $h0" | bc) $lagging"
}

echo "# admin scrape cost: $VIEWERS viewers, ${DURATION}s runs, $ROUNDS rounds ($(git -C "$REPO" rev-parse --short HEAD))"
echo "| round | mode | server CPU s | admin thread CPU s | shard CPU s | lagging |"
echo "|---|---|---|---|---|---|"
for r in $(seq "$ROUNDS"); do
    if [ $((r % 2)) -eq 1 ]; then order="quiet scrape"; else order="scrape quiet"; fi
    for mode in $order; do
        read -r server admin shard lag < <(run_once "$mode")
        echo "| $r | $mode | $server | $admin | $shard | $lag |"
    done
done
