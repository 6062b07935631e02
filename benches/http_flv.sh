#!/usr/bin/env bash
# HTTP-FLV viewers side by side (issue 11): shardcast's RTMP viewers, shardcast's HTTP-FLV
# viewers, and Node-Media-Server's HTTP-FLV viewers, the same load generator run against each.
#
#   benches/http_flv.sh                          1000 and 2000 viewers, every-frame and 100 ms
#                                                batch readers, 2 rounds of 20 s
#   benches/http_flv.sh --viewers 500 --duration 8 --rounds 1 --read-interval 0
#
# One 2.5 Mbit/s synthetic stream (the load generator's publisher), each server on CPU 1
# (shardcast: one shard, `server.cpus = [1]`; Node-Media-Server: taskset), the load generator
# on CPU 0; the order of the servers alternates each round. Node-Media-Server 2.7.4 (npm's
# node-media-server, the widely deployed 2.x line) is installed into a temp directory.
# Reported per run: server CPU-seconds per delivered GB (the load generator's --server-pid
# sampling over the steady state), the ratio to shardcast's RTMP viewers in the same round,
# join time p99 (connect to first keyframe), RSS per viewer, lagging viewers and lost
# messages. Only 127.0.0.1 is used; every server is stopped however the script exits.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VIEWERS="1000 2000"
READS="0 100ms"
DURATION=20
ROUNDS=2
NMS_VERSION=2.7.4
while [ $# -gt 0 ]; do
    case "$1" in
        --viewers) VIEWERS="$2"; shift 2 ;;
        --read-interval) READS="$2"; shift 2 ;;
        --duration) DURATION="$2"; shift 2 ;;
        --rounds) ROUNDS="$2"; shift 2 ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
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

command -v node >/dev/null || { echo "node is needed for Node-Media-Server" >&2; exit 1; }
(cd "$WORK" && npm install --silent --no-audit --no-fund "node-media-server@$NMS_VERSION" >/dev/null 2>&1)
cat >"$WORK/nms.js" <<'EOF'
const NodeMediaServer = require('node-media-server');
const [rtmp, http] = process.argv.slice(2).map(Number);
const nms = new NodeMediaServer({
  logType: 1,
  rtmp: { port: rtmp, chunk_size: 4096, gop_cache: true, ping: 30, ping_timeout: 60 },
  http: { port: http, allow_origin: '*', mediaroot: require('os').tmpdir() },
});
nms.run();
EOF

RTMP_PORT=19700
HTTP_PORT=19701
cat >"$WORK/shardcast.toml" <<EOF
[server]
cpus = [1]
listen = "127.0.0.1:$RTMP_PORT"
[admin]
listen = ""
[http]
listen = "127.0.0.1:$HTTP_PORT"
[log]
filter = "warn"
[app.live]
EOF

wait_port() { for _ in $(seq 200); do (echo >/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; return 1; }

start_server() { # shardcast | nms
    case "$1" in
        shardcast) taskset -c 1 "$BIN" --config "$WORK/shardcast.toml" --shards 1 >"$WORK/server.log" 2>&1 & ;;
        nms) (cd "$WORK" && exec taskset -c 1 node nms.js "$RTMP_PORT" "$HTTP_PORT") >"$WORK/server.log" 2>&1 & ;;
    esac
    SERVER=$!
    wait_port "$RTMP_PORT" && wait_port "$HTTP_PORT"
}

stop_server() { kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; SERVER=""; sleep 1; }

run() { # server protocol viewers read -> json path
    local server="$1" protocol="$2" viewers="$3" read="$4" out="$WORK/$1-$2-$3-$4-$RANDOM.json"
    start_server "$server"
    taskset -c 0 "$LOAD" --url "rtmp://127.0.0.1:$RTMP_PORT/live/load-{n}" \
        --play-url "$([ "$protocol" = rtmp ] && echo "rtmp://127.0.0.1:$RTMP_PORT/live/load-{n}" || echo "http://127.0.0.1:$HTTP_PORT/live/load-{n}.flv")" \
        --protocol "$protocol" --streams 1 --viewers "$viewers" --read-interval "$read" \
        --ramp 1000 --duration "${DURATION}s" --threads 1 --no-progress \
        --server-pid "$SERVER" --json "$out" >/dev/null 2>&1 || true
    stop_server
    echo "$out"
}

row() { # label json base_cpu_per_gb
    python3 - "$@" <<'PY'
import json, sys
label, path, base = sys.argv[1], sys.argv[2], sys.argv[3]
try:
    r = json.load(open(path))
except Exception as e:
    print(f"| {label} | failed: {e} | | | | |"); sys.exit()
s = r.get("server") or {}
cpu = s.get("cpu_seconds_per_gb")
ratio = f"{cpu / float(base):.2f}" if cpu and base not in ("", "None") else "-"
rss = s.get("rss_bytes_per_viewer")
join = r["first_keyframe_ms"]["p99"]
print(f"| {label} | {cpu:.2f} | {ratio} | {join:.1f} | {rss / 1024 if rss else float('nan'):.1f} | {r['viewers']['lagging']} / {r['messages']['lost']} |" if cpu else f"| {label} | - | - | {join:.1f} | - | {r['viewers']['lagging']} / {r['messages']['lost']} |")
PY
}

cpu_of() { python3 -c "import json,sys; print((json.load(open(sys.argv[1])).get('server') or {}).get('cpu_seconds_per_gb'))" "$1" 2>/dev/null || echo ""; }

echo "# HTTP-FLV benchmark ($(git -C "$REPO" rev-parse --short HEAD), $(date -u +%Y-%m-%dT%H:%MZ)): ${DURATION}s runs, $ROUNDS rounds"
echo
echo "| run | server CPU-s/GB | ÷ shardcast RTMP | join p99 ms | RSS KiB/viewer | lagging / lost |"
echo "|---|---:|---:|---:|---:|---:|"
for viewers in $VIEWERS; do
    for read in $READS; do
        for round in $(seq "$ROUNDS"); do
            if [ $((round % 2)) -eq 1 ]; then order="rtmp flv nms"; else order="nms flv rtmp"; fi
            declare -A out=()
            for what in $order; do
                case "$what" in
                    rtmp) out[rtmp]=$(run shardcast rtmp "$viewers" "$read") ;;
                    flv) out[flv]=$(run shardcast http-flv "$viewers" "$read") ;;
                    nms) out[nms]=$(run nms http-flv "$viewers" "$read") ;;
                esac
            done
            base=$(cpu_of "${out[rtmp]}")
            tag="$viewers viewers, read ${read/#0/every frame}, round $round"
            row "shardcast RTMP, $tag" "${out[rtmp]}" "$base"
            row "shardcast HTTP-FLV, $tag" "${out[flv]}" "$base"
            row "Node-Media-Server $NMS_VERSION HTTP-FLV, $tag" "${out[nms]}" "$base"
            unset out
        done
    done
done
