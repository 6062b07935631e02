#!/usr/bin/env bash
# RTMPS viewers against plain RTMP viewers (issue 12): the same relay, the same load
# generator, one run each side by side, so the ratio holds even on a busy machine.
#
#   benches/rtmps.sh                              500 viewers, 2 rounds of 15 s
#   benches/rtmps.sh --viewers 200 --duration 8 --rounds 1
#
# One 2.5 Mbit/s synthetic stream published over plain RTMP; viewers play it over RTMP
# (`rtmp://`) or RTMPS (`rtmps://`, the load generator's rustls client with
# --tls-insecure against a self-signed certificate made here with openssl). shardcast runs
# one shard on CPU 1 (`server.cpus = [1]`), the load generator on CPU 0; the order of the
# two runs alternates each round. Reported per run: server CPU-seconds per delivered GB (the
# load generator's --server-pid sampling over the steady state), and the RTMPS/RTMP ratio
# of the same round. Only 127.0.0.1 is used; the relay is stopped however the script exits.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VIEWERS=500
DURATION=15
ROUNDS=2
while [ $# -gt 0 ]; do
    case "$1" in
        --viewers) VIEWERS="$2"; shift 2 ;;
        --duration) DURATION="$2"; shift 2 ;;
        --rounds) ROUNDS="$2"; shift 2 ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done

source "$REPO/benches/bench_setup.sh"
SERVER=""

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=localhost -addext subjectAltName=IP:127.0.0.1,DNS:localhost \
    -keyout "$WORK/key.pem" -out "$WORK/cert.pem" >/dev/null 2>&1

RTMP_PORT=19710
TLS_PORT=19711
shardcast_config "$WORK/shardcast.toml" "$RTMP_PORT" "" "tls_listen = \"127.0.0.1:$TLS_PORT\"
tls_cert_file = \"$WORK/cert.pem\"
tls_key_file = \"$WORK/key.pem\"" ""

run() { # rtmp | rtmps -> json path
    local out="$WORK/$1-$RANDOM.json" play
    taskset -c 1 "$BIN" --config "$WORK/shardcast.toml" --shards 1 >"$WORK/server.log" 2>&1 &
    SERVER=$!
    track "$SERVER"
    wait_port "$RTMP_PORT" && wait_port "$TLS_PORT"
    if [ "$1" = rtmps ]; then play="rtmps://127.0.0.1:$TLS_PORT/live/load-{n}"; else play="rtmp://127.0.0.1:$RTMP_PORT/live/load-{n}"; fi
    tracked taskset -c 0 "$LOAD" --url "rtmp://127.0.0.1:$RTMP_PORT/live/load-{n}" --play-url "$play" \
        --tls-insecure --streams 1 --viewers "$VIEWERS" --ramp 1000 --duration "${DURATION}s" \
        --threads 1 --no-progress --server-pid "$SERVER" --json "$out" >/dev/null 2>&1 || true
    kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; untrack "$SERVER"; SERVER=""; sleep 1
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
gbps = r.get("throughput", {}).get("gbit_per_s") if isinstance(r.get("throughput"), dict) else None
v = r["viewers"]
print(f"| {label} | {cpu:.2f} | {ratio} | {v.get('playing', '-')} | {v['lagging']} / {r['messages']['lost']} |" if cpu else f"| {label} | - | - | {v.get('playing', '-')} | {v['lagging']} / {r['messages']['lost']} |")
PY
}

cpu_of() { python3 -c "import json,sys; print((json.load(open(sys.argv[1])).get('server') or {}).get('cpu_seconds_per_gb'))" "$1" 2>/dev/null || echo ""; }

echo "# RTMPS benchmark ($(git -C "$REPO" rev-parse --short HEAD), $(date -u +%Y-%m-%dT%H:%MZ)): $VIEWERS viewers, ${DURATION}s runs, $ROUNDS rounds"
echo
echo "| run | server CPU-s/GB | ÷ RTMP same round | viewers playing | lagging / lost |"
echo "|---|---:|---:|---:|---:|"
for round in $(seq "$ROUNDS"); do
    if [ $((round % 2)) -eq 1 ]; then order="rtmp rtmps"; else order="rtmps rtmp"; fi
    declare -A out=()
    for what in $order; do out[$what]=$(run "$what"); done
    base=$(cpu_of "${out[rtmp]}")
    row "RTMP viewers, round $round" "${out[rtmp]}" "$base"
    row "RTMPS viewers, round $round" "${out[rtmps]}" "$base"
    unset out
done
