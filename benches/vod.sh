#!/usr/bin/env bash
# Video on demand on one core (issue 14): VOD viewers of one large stored FLV at random
# positions, beside live RTMP viewers of a stream of about the same bitrate, on the same
# relay in the same run, so the ratio holds even on a busy machine.
#
#   benches/vod.sh                               500 viewers, a ~1 GB file, 30 s per side
#   benches/vod.sh --viewers 20 --size-mb 40 --duration 8      a smoke run
#   benches/vod.sh --cold                        the page cache dropped before the VOD side
#                                                (root), so its reads go to the disk
#
# The file: ffmpeg encodes a 60 s clip (lavfi testsrc 640x360 25 fps, x264 CBR at
# --bitrate with filler, AAC) and loop-concatenates it (`-stream_loop`, stream copy) to about
# --size-mb, with a keyframe index; it is cached in --cache (default target/bench-vod) and
# made again only when missing. shardcast runs one shard on CPU 1 (`server.cpus = [1]`,
# `shards = 1`, `taskset -c 1`), the load generator on CPU 0 (`taskset -c 0 --threads 1`).
# First one viewer opens the file (the relay indexes it once, off the shard), then:
#   VOD:  --viewers viewers play the file, each from its own position
#         (`--vod-start random:LENGTH`, the file's length less a minute, so none reaches
#         the end within the run);
#   live: one synthetic RTMP stream at --bitrate and --viewers viewers of it.
# Reported per side: server CPU-seconds per delivered GB (the load generator's --server-pid
# sampling over the steady state) and VOD's ratio to live; viewers playing at the end,
# lagging and failed; and the fan-out delay (`shardcast_fan_out_delay_seconds` from
# /metrics, the time queued fan-out work waited for its task: a shard stall, from disk reads
# or anything else, shows there) over each side: passes, mean, and passes that waited more
# than 10 ms, over the whole side and over its steady state (from 3 s in, after the viewers'
# join burst, to the end). Only 127.0.0.1 is used; the relay is stopped however the script
# exits.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VIEWERS=500
DURATION=30
SIZE_MB=1024
BITRATE=2500k
CACHE="$REPO/target/bench-vod"
COLD=0
while [ $# -gt 0 ]; do
    case "$1" in
        --viewers) VIEWERS="$2"; shift 2 ;;
        --duration) DURATION="$2"; shift 2 ;;
        --size-mb) SIZE_MB="$2"; shift 2 ;;
        --bitrate) BITRATE="$2"; shift 2 ;;
        --cache) CACHE="$2"; shift 2 ;;
        --cold) COLD=1; shift ;;
        -h|--help) sed -n '2,29p' "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done

source "$REPO/benches/bench_setup.sh"
SERVER=""

# The stored file, cached by size and bitrate.
mkdir -p "$CACHE"
NAME="vod-${SIZE_MB}mb-${BITRATE}"
FILE="$CACHE/$NAME.flv"
if [ ! -s "$FILE" ]; then
    echo "making $FILE (a 60 s clip, looped to about $SIZE_MB MB)..." >&2
    CLIP="$CACHE/clip-${BITRATE}.flv"
    taskset -c 0 ffmpeg -hide_banner -loglevel error -y \
        -f lavfi -i "testsrc=size=640x360:rate=25:duration=60" \
        -f lavfi -i "sine=frequency=440:duration=60" \
        -c:v libx264 -preset ultrafast -g 50 -pix_fmt yuv420p \
        -b:v "$BITRATE" -minrate "$BITRATE" -maxrate "$BITRATE" -bufsize "$BITRATE" \
        -x264-params nal-hrd=cbr -c:a aac -b:a 128k "$CLIP"
    CLIP_BYTES=$(stat -c %s "$CLIP")
    # Copies of the clip closest to the size asked for; -stream_loop N plays it N+1 times.
    LOOPS=$(( (SIZE_MB * 1024 * 1024 + CLIP_BYTES / 2) / CLIP_BYTES - 1 ))
    [ "$LOOPS" -lt 0 ] && LOOPS=0
    taskset -c 0 ffmpeg -hide_banner -loglevel error -y -stream_loop "$LOOPS" -i "$CLIP" \
        -c copy -f flv -flvflags add_keyframe_index "$FILE.part"
    mv "$FILE.part" "$FILE"
fi
FILE_BYTES=$(stat -c %s "$FILE")
LENGTH_MS=$(ffprobe -v error -show_entries format=duration -of csv=p=0 "$FILE" | awk '{printf "%d", $1 * 1000}')
MAX_START=$(( LENGTH_MS > 120000 ? LENGTH_MS - 60000 : LENGTH_MS / 2 ))

RTMP_PORT=19720
ADMIN_PORT=19721
shardcast_config "$WORK/shardcast.toml" "$RTMP_PORT" "$ADMIN_PORT" "shards = 1" "vod_dir = \"$CACHE\""

metrics() { curl -s "http://127.0.0.1:$ADMIN_PORT/metrics"; }

taskset -c 1 "$BIN" --config "$WORK/shardcast.toml" --shards 1 >"$WORK/server.log" 2>&1 &
SERVER=$!
track "$SERVER"
wait_port "$RTMP_PORT" && wait_port "$ADMIN_PORT"

# The first open indexes the file (off the shard): not part of the measurement.
taskset -c 0 "$LOAD" --url "rtmp://127.0.0.1:$RTMP_PORT/live/$NAME" --vod-start 0 \
    --viewers 1 --duration 3s --threads 1 --connect-timeout 120s --no-progress >/dev/null 2>&1 || true

run() { # vod|live -> json path; the metrics before and after go beside it
    local side="$1" out="$WORK/$1.json"
    if [ "$side" = vod ] && [ "$COLD" = 1 ]; then
        sync
        echo 3 >/proc/sys/vm/drop_caches
    fi
    metrics >"$WORK/$side.before"
    (sleep 3; metrics >"$WORK/$side.steady") &
    if [ "$side" = vod ]; then
        taskset -c 0 "$LOAD" --url "rtmp://127.0.0.1:$RTMP_PORT/live/$NAME" \
            --vod-start "random:$MAX_START" --viewers "$VIEWERS" --ramp 500 \
            --duration "${DURATION}s" --threads 1 --no-progress --server-pid "$SERVER" \
            --json "$out" >"$WORK/$side.table" 2>&1 || true
    else
        taskset -c 0 "$LOAD" --url "rtmp://127.0.0.1:$RTMP_PORT/live/live-load-{n}" \
            --bitrate "$BITRATE" --gop 2s --viewers "$VIEWERS" --ramp 500 \
            --duration "${DURATION}s" --threads 1 --no-progress --server-pid "$SERVER" \
            --json "$out" >"$WORK/$side.table" 2>&1 || true
    fi
    metrics >"$WORK/$side.after"
    echo "$out"
}

VOD_JSON=$(run vod)
LIVE_JSON=$(run live)

echo "# VOD benchmark ($(git -C "$REPO" rev-parse --short HEAD), $(date -u +%Y-%m-%dT%H:%MZ)): $VIEWERS viewers, ${DURATION}s per side"
echo
echo "file: $FILE_BYTES bytes, $((LENGTH_MS / 1000)) s at $BITRATE; VOD viewers start at random positions below $((MAX_START / 1000)) s"
echo
[ "$COLD" = 1 ] && echo "the page cache was dropped before the VOD side: its reads went to the disk" && echo
echo "| side | server CPU-s/GB | ÷ live | delivered GB | playing at end / failed / lagging | fan-out passes | mean delay ms | passes > 10 ms | steady state: passes / > 10 ms / > 50 ms |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
python3 - "$WORK" <<'PY'
import json, sys, os
work = sys.argv[1]

def series(path):
    out = {}
    for line in open(path):
        if line.startswith("shardcast_fan_out_delay_seconds"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out

def delay(side, start="before"):
    before, after = series(f"{work}/{side}.{start}"), series(f"{work}/{side}.after")
    d = lambda k: after.get(k, 0.0) - before.get(k, 0.0)
    count = d("shardcast_fan_out_delay_seconds_count")
    total = d("shardcast_fan_out_delay_seconds_sum")
    under = d('shardcast_fan_out_delay_seconds_bucket{le="0.01"}')
    under50 = d('shardcast_fan_out_delay_seconds_bucket{le="0.05"}')
    return count, (total / count * 1000 if count else float("nan")), count - under, count - under50

def load(side):
    try:
        return json.load(open(f"{work}/{side}.json"))
    except Exception as e:
        print(f"| {side} | failed: {e} | | | | | | |")
        print(open(f"{work}/{side}.table").read()[-2000:], file=sys.stderr)
        return None

rows = {side: load(side) for side in ("vod", "live")}
base = ((rows["live"] or {}).get("server") or {}).get("cpu_seconds_per_gb")
for side, r in rows.items():
    if r is None:
        continue
    s = r.get("server") or {}
    cpu = s.get("cpu_seconds_per_gb")
    ratio = f"{cpu / base:.2f}" if cpu and base else "-"
    v = r["viewers"]
    count, mean, over, _ = delay(side)
    if os.path.exists(f"{work}/{side}.steady"):
        sc, _, sover, sover50 = delay(side, "steady")
        steady = f"{sc:.0f} / {sover:.0f} / {sover50:.0f}"
    else:
        steady = "-"
    cpu_text = f"{cpu:.2f}" if cpu else "-"
    print(f"| {side} | {cpu_text} | {ratio} | {s.get('delivered_gb', 0):.3f} | "
          f"{v['playing_at_end']} / {v['failed']} / {v['lagging']} | {count:.0f} | {mean:.3f} | {over:.0f} | {steady} |")
PY
