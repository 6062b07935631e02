#!/usr/bin/env bash
# Two shards on two cores (issue 15): shardcast with `shards = 2`, `cpus = [0, 1]`, one
# publisher (a synthetic 2.5 Mbit/s stream; SO_REUSEPORT puts it on either shard) and V
# viewers spread over both shards by SO_REUSEPORT, beside the same load against one shard
# (`shards = 1`, `cpus = [1]`), alternating per round. Reported per run: server CPU-s per
# delivered GB (whole process and per shard thread), viewers and the publisher per shard,
# delivered Gbit/s, latency p50/p99, failed/lagging/lost, and the messages handed across
# cores (`shardcast_shard_inbox_received_total`); then the cross-core cost (two-shard CPU
# per GB minus one-shard, per message handed across) and a projection to 16 and 64 cores.
#
#   benches/two_shards.sh                        2000 viewers, 20 s runs, 2 rounds
#   benches/two_shards.sh --viewers 200 --duration 8 --rounds 1     a smoke run
#   options: --viewers V --duration S --rounds N --bitrate RATE --gen-cpus LIST --out DIR
#
# On a 2-core machine the load generator (one thread, `taskset -c 0` by default) shares CPU 0
# with shard 0 of the two-shard run: that run measures the relay and the generator fighting
# for a core, the one-shard run does not. Only 127.0.0.1 is used; every server is stopped
# however the script exits. Reports and /metrics samples stay in --out (default /tmp/two_shards.*).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VIEWERS=2000
ROUNDS=2
DURATION=20
BITRATE=2500k
GEN_CPUS=0
OUT=""
SERVERS="shardcast-2 shardcast"
while [ $# -gt 0 ]; do
    case "$1" in
        --viewers) VIEWERS="$2"; shift 2 ;;
        --rounds) ROUNDS="$2"; shift 2 ;;
        --duration) DURATION="$2"; shift 2 ;;
        --bitrate) BITRATE="$2"; shift 2 ;;
        --gen-cpus) GEN_CPUS="$2"; shift 2 ;;
        --out) OUT="$2"; shift 2 ;;
        -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
[ "$(nproc)" -ge 2 ] || { echo "two_shards.sh needs at least 2 CPUs" >&2; exit 1; }

cd "$REPO"
PORT=19820
ADMIN_PORT=19821
# shellcheck source=benches/side_by_side.sh
source "$REPO/benches/side_by_side.sh"
[ -n "$OUT" ] || OUT="$(mktemp -d /tmp/two_shards.XXXXXX)"
mkdir -p "$OUT"

RAMP=$(( VIEWERS / 2 > 200 ? VIEWERS / 2 : 200 ))
# The sample window: from 2 s after the last viewer started to 1 s before the end.
FROM_S=$(( (VIEWERS + RAMP - 1) / RAMP + 2 ))
TO_S=$(( DURATION - 1 ))
[ "$TO_S" -gt "$FROM_S" ] || { echo "--duration $DURATION leaves no window after the ${FROM_S} s ramp" >&2; exit 2; }

sample() { # path: time, the server's CPU ticks (process, then each thread), and /metrics
    {
        echo "time $(date +%s.%N)"
        echo "process $(awk '{print $14 + $15}' "/proc/$MEASURED/stat")"
        for task in /proc/"$MEASURED"/task/*; do
            echo "thread $(tr ' ' _ <"$task/comm") $(awk '{print $14 + $15}' "$task/stat")"
        done
    } >"$1.stat" 2>/dev/null || true
    curl -s --max-time 5 "http://127.0.0.1:$ADMIN_PORT/metrics" >"$1.metrics" || true
}

run() { # server round -> json path
    local out="$OUT/$1-round$2.json"
    start_server "$1"
    ( sleep "$FROM_S"; sample "$out.from"; sleep $(( TO_S - FROM_S )); sample "$out.to" ) &
    local sampler=$!
    track "$sampler"
    tracked taskset -c "$GEN_CPUS" "$LOAD" --url "rtmp://127.0.0.1:$PORT/live/two-{n}" --streams 1 \
        --viewers "$VIEWERS" --threads 1 --source synthetic --bitrate "$BITRATE" --fps 30 \
        --gop 2s --ramp "$RAMP" --duration "${DURATION}s" --no-progress \
        --server-pid "$MEASURED" --admin "http://127.0.0.1:$ADMIN_PORT" \
        --json "$out" >"$out.txt" 2>&1 || true
    wait "$sampler" || true
    untrack "$sampler"
    cp "$WORK/server.log" "$out.server.log" 2>/dev/null || true
    stop_server
    echo "$out"
}

{
    echo "$SERVERS" | tr ' ' '\n' | sed 's/^/servers /'
    echo "viewers $VIEWERS"
    echo "bitrate $BITRATE"
    echo "commit $(git -C "$REPO" rev-parse --short HEAD)$(git -C "$REPO" diff --quiet HEAD || echo '+dirty')"
    echo "busy_before $(uptime)"
} >"$OUT/meta.txt"
: >"$OUT/runs.tsv"
for round in $(seq "$ROUNDS"); do
    order="$SERVERS"
    [ $((round % 2)) -eq 0 ] && order="$(echo "$SERVERS" | tr ' ' '\n' | tac | tr '\n' ' ')"
    for server in $order; do
        # In the background, so that a signal stops the script (and its servers) at once.
        run "$server" "$round" >"$WORK/run.out" &
        wait $!
        json=$(cat "$WORK/run.out")
        printf '%s\t%s\t%s\n' "$server" "$round" "$json" >>"$OUT/runs.tsv"
    done
done

python3 - "$OUT" "$VIEWERS" "$BITRATE" "$DURATION" "$ROUNDS" "$GEN_CPUS" "$(git -C "$REPO" rev-parse --short HEAD)" <<'PY' | tee "$OUT/table.md"
import json, os, statistics, sys, time

out, viewers, bitrate, duration, rounds, gen_cpus, commit = sys.argv[1:]
tick = os.sysconf("SC_CLK_TCK")
label = {"shardcast-2": "2 shards, cpus [0, 1]", "shardcast": "1 shard, cpus [1]"}


def stat(path):
    r = {"threads": {}}
    try:
        for line in open(path):
            k, *v = line.split()
            if k == "time":
                r["time"] = float(v[0])
            elif k == "process":
                r["process"] = int(v[0]) / tick
            elif k == "thread":
                r["threads"][v[0]] = r["threads"].get(v[0], 0) + int(v[1]) / tick
    except (OSError, ValueError, IndexError):
        pass
    return r


def metrics(path):
    m = {}
    try:
        for line in open(path):
            if line.startswith("#") or not line.strip():
                continue
            name, value = line.rsplit(None, 1)
            m[name] = float(value)
    except (OSError, ValueError):
        pass
    return m


def total(m, prefix):
    vals = [v for k, v in m.items() if k == prefix or k.startswith(prefix + "{")]
    return sum(vals) if vals else None


def one(server, rnd, path):
    r = {"server": server, "round": rnd}
    try:
        j = json.load(open(path))
    except Exception as e:
        r["error"] = str(e)
        return r
    s = j.get("server") or {}
    r["cpu_gb"] = s.get("cpu_seconds_per_gb")
    r["cores"] = s.get("cpu_cores")
    d = j["delivered"]
    r["gbit"] = d.get("steady_gbit_per_s") or d.get("gbit_per_s")
    lat = j.get("latency_ms") or {}
    r["p50"], r["p99"] = lat.get("p50"), lat.get("p99")
    v = j["viewers"]
    r["bad"] = f"{v['failed']} / {v['lagging']} / {j['messages']['lost']}"
    shards = (j.get("server_api") or {}).get("shards") or []
    r["per_shard"] = " / ".join(
        f"{x.get('viewers', 0)}{'+P' if x.get('connections', 0) > x.get('viewers', 0) else ''}"
        for x in sorted(shards, key=lambda x: x.get("shard", 0))) or "-"
    gen = j.get("load_generator") or {}
    r["gen"] = gen.get("cpu_cores")
    # The script's own window: CPU, bytes and cross-core messages over the same span.
    a, b = stat(path + ".from.stat"), stat(path + ".to.stat")
    ma, mb = metrics(path + ".from.metrics"), metrics(path + ".to.metrics")
    if "time" in a and "time" in b and "process" in a and "process" in b:
        span = b["time"] - a["time"]
        cpu = b["process"] - a["process"]
        sent = (total(mb, "shardcast_sent_bytes_total") or 0) - (total(ma, "shardcast_sent_bytes_total") or 0)
        r["span"] = span
        if sent > 0:
            r["w_cpu_gb"] = cpu / (sent / 1e9)
            r["shard_cpu"] = " / ".join(
                f"{(b['threads'].get(t, 0) - a['threads'].get(t, 0)) / span:.2f}"
                for t in sorted(b["threads"]) if t.startswith("shard-"))
            ra, rb = total(ma, "shardcast_shard_inbox_received_total"), total(mb, "shardcast_shard_inbox_received_total")
            wa, wb = total(ma, "shardcast_shard_inbox_wakeups_total"), total(mb, "shardcast_shard_inbox_wakeups_total")
            if ra is not None and rb is not None:
                r["across_s"] = (rb - ra) / span
                r["across_gb"] = (rb - ra) / (sent / 1e9)
                r["wake_s"] = (wb - wa) / span
    return r


runs = []
for line in open(os.path.join(out, "runs.tsv")):
    server, rnd, path = line.rstrip("\n").split("\t")
    runs.append(one(server, rnd, path))

f = lambda v, p=2: "-" if v is None else f"{v:.{p}f}"
print(f"# Two shards on two cores ({commit}, {time.strftime('%Y-%m-%dT%H:%MZ', time.gmtime())}): "
      f"1 stream at {bitrate}, {viewers} viewers, {duration} s runs, {rounds} rounds")
print()
print(f"CAVEAT: this machine has {os.cpu_count()} CPUs; the load generator runs on CPU(s) {gen_cpus}, "
      "so in the two-shard run it shares a core with shard 0. That run measures the relay and the "
      "generator fighting for a core; the one-shard run (CPU 1) does not.")
print()
print("| run | viewers per shard (+P: publisher's shard) | CPU-s/GB (loadgen window) | CPU-s/GB (script window) | server cores | shard threads' cores | Gbit/s | latency p50 / p99 ms | failed / lagging / lost | msgs across cores /s | inbox wake-ups /s | generator cores |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for r in runs:
    name = f"{label.get(r['server'], r['server'])}, round {r['round']}"
    if "error" in r:
        print(f"| {name} | failed: {r['error']} |" + " |" * 10)
        continue
    print(f"| {name} | {r['per_shard']} | {f(r['cpu_gb'], 3)} | {f(r.get('w_cpu_gb'), 3)} | {f(r['cores'])} "
          f"| {r.get('shard_cpu', '-')} | {f(r['gbit'])} | {f(r['p50'], 1)} / {f(r['p99'], 1)} | {r['bad']} "
          f"| {f(r.get('across_s'), 0)} | {f(r.get('wake_s'), 0)} | {f(r['gen'])} |")


def med(server, key):
    vals = [r[key] for r in runs if r["server"] == server and r.get(key) is not None]
    return statistics.median(vals) if vals else None


two, one_ = med("shardcast-2", "w_cpu_gb"), med("shardcast", "w_cpu_gb")
across_gb = med("shardcast-2", "across_gb")
across_s = med("shardcast-2", "across_s")
print()
print("Cross-core cost (medians over rounds, script window):")
cost_us = None
if two is not None and one_ is not None:
    print(f"- CPU-s/GB: 2 shards {two:.3f}, 1 shard {one_:.3f}, ratio {two / one_:.2f}x, difference {two - one_:+.3f}")
    if across_gb:
        cost_us = (two - one_) / across_gb * 1e6
        print(f"- messages handed across cores: {across_gb:,.0f} per delivered GB ({across_s:,.0f}/s)")
        print(f"- difference per message handed across: {cost_us:+.1f} us, an upper bound: all of the "
              "2-shard run's extra CPU is charged to the hand-offs, including the second executor's own "
              "upkeep (which dominates at small loads) and the generator sharing shard 0's core; noise "
              "when the difference is within the rounds' spread")
    else:
        print("- no messages crossed cores in the window: per-message cost not measurable")
else:
    print("- not measurable (a run is missing its window samples)")

print()
print("PROJECTION (arithmetic, not measured): per-core figures from RESULTS.md \"The ceiling of one core\": "
      "8,000-10,000 viewers of a 2.5 Mbit/s stream per core at the knee, 21-26 Gbit/s, on loopback.")
for cores in (16, 64):
    lo, hi = 8000 * cores, 10000 * cores
    print(f"- {cores} cores: {lo:,}-{hi:,} viewers, {21 * cores:,}-{26 * cores:,} Gbit/s of CPU capacity; "
          f"a 25 Gbit/s NIC carries 10,000 viewers at 2.5 Mbit/s and a 100 Gbit/s NIC 40,000, "
          f"so the NIC, not the cores, caps the host ({cores} cores need "
          f"{21 * cores / 100:.0f}-{26 * cores / 100:.0f} x 100 Gbit/s to be CPU-bound).")
if cost_us is not None and cost_us <= 0:
    print("- cross-core: the 2-shard run cost no more CPU per GB than the 1-shard run here: no cost to project")
elif cost_us is not None and across_s:
    # One stream's messages reach each other shard once, whatever its viewer count there.
    per_stream_s = across_s  # 2 shards: one other shard
    for cores in (16, 64):
        frac = per_stream_s * (cores - 1) * cost_us / 1e6
        print(f"- cross-core, {cores} cores: a stream published on one shard is handed to {cores - 1} others, "
              f"about {per_stream_s * (cores - 1):,.0f} messages/s, at most {frac:.3f} of a core in all at "
              f"{cost_us:.1f} us each (per stream with viewers on every shard: it grows with streams, not viewers)")
PY
echo "(reports, /metrics samples and server logs in $OUT)"
