#!/usr/bin/env bash
# Side-by-side RTMP fan-out benchmark (issue 4): nginx-rtmp, shardcast (1 shard and all
# shards) and the ideal sender (benches/ideal_sender.rs, with and without TCP_NODELAY), each
# on its own 127.0.0.1 port, a fresh server per run, the same shardcast-load run against each
# in turn; plus the loopback ceiling measured with iperf3.
#
#   benches/fanout.sh            full run: 100, 500, 1000, 2000 viewers (more while nginx and
#                                1-shard shardcast both keep up), 3 rounds, 20 s runs
#   benches/fanout.sh --quick    100 and 500 viewers, 1 round, 8 s runs
#   benches/fanout.sh --help     every option
#
# The sweep runs once per read mode (--read-interval "0 100ms": viewers that read every frame
# as it arrives, then viewers that read in 100 ms batches), with --streams P streams of
# --viewers V viewers each. Server names may carry shardcast config overrides:
# shardcast-1+viewer.tcp_nodelay=false+viewer.flush_interval_ms=33 writes those keys into the
# generated TOML under [viewer] (the text after the last dot is the key, before it the table).
#
# Two builds side by side: shardcast-before is shardcast-1 (same config, same pinning) run
# from the binary given by --before-bin PATH (or $SHARDCAST_BEFORE_BIN), while shardcast-1
# runs this tree's fresh build: benches/fanout.sh --before-bin /path/to/old/shardcast
# --servers "shardcast-before shardcast-1" ... interleaves them and adds an after/before table.
#
# Pinning: the load generator runs on CPU 0 (taskset), every server on CPU 1 (taskset; for
# 1-shard shardcast also `server.cpus = [1]`), except "shardcast all shards", which is left
# unpinned by this script: shardcast then pins shard N to CPU N itself, so its shard 0 shares
# CPU 0 with the load generator. Only 127.0.0.1 is ever targeted. Every server this script
# starts is stopped when it exits, however it exits.
#
# Needs root for apt-get (nginx and libnginx-mod-rtmp when nginx is in --servers, iperf3
# unless --no-iperf; Debian packages, installed when missing) and to run nginx in the
# foreground with its own prefix (nothing in /etc is read or written). `perf` (Debian's
# linux-perf), when present, counts the servers' socket sends in one extra instrumented run
# per server; --no-perf skips that.

set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$BENCH_DIR/.." && pwd)"

# ---- options -------------------------------------------------------------------------------
VIEWERS="100 500 1000 2000"
EXTRA="3000 4000 5000 6000 8000"
ROUNDS=3
DURATION=20
SERVERS="nginx shardcast-1 shardcast-all ideal ideal-nodelay"
PERF_VIEWERS=1000
PORT_BASE=19500
OUT=""
INSTALL=1
USE_PERF=1
IPERF=1
VERIFY_EVERY=100
READ_INTERVALS="0"
STREAMS=1
BITRATE=2500k
BEFORE_BIN="${SHARDCAST_BEFORE_BIN:-}"
BEFORE_LABEL="${SHARDCAST_BEFORE_LABEL:-}"
ALTERNATE=0

usage() {
    cat <<EOF
usage: benches/fanout.sh [options]
  --quick             100 and 500 viewers, 1 round, 8 s runs, no extra levels
  --viewers "LIST"    viewer counts always run, ascending [${VIEWERS}]
  --extra "LIST"      further counts, run only while nginx and shardcast-1 keep up [${EXTRA}]
  --rounds N          interleaved rounds per viewer count; medians are reported [${ROUNDS}]
  --duration S        seconds per run, ramp included [${DURATION}]
  --servers "LIST"    subset/order of: nginx shardcast-1 shardcast-all ideal ideal-nodelay,
                      and, not run by default: shardcast-2on1 (2 shards both pinned to
                      CPU 1), shardcast-1-nagle (= shardcast-1+viewer.tcp_nodelay=false),
                      shardcast-before (shardcast-1 run from --before-bin).
                      A shardcast server may add config overrides, +TABLE.KEY=VALUE each,
                      VALUE in TOML: shardcast-1+viewer.flush_interval_ms=33
  --read-interval "LIST"  read modes, each a whole sweep: 0 = viewers read every frame as it
                      arrives, 100ms = batches every 100 ms (shardcast-load --read-interval)
                      [${READ_INTERVALS}]
  --streams P         streams, each with --viewers viewers (viewers per stream, as
                      shardcast-load counts them); the ideal sender serves 1 stream only and
                      is skipped when P > 1 [${STREAMS}]
  --bitrate RATE      each stream's synthetic bitrate, as shardcast-load takes it (the long
                      tail of issue 15 uses 1500k) [${BITRATE}]
  --before-bin PATH   the shardcast binary shardcast-before runs (1 shard, config and
                      pinning exactly as shardcast-1, which runs this tree's build); also
                      \$SHARDCAST_BEFORE_BIN [${BEFORE_BIN:-none}]
  --before-label TEXT what it is (a commit, say), shown in the tables and meta.txt; also
                      \$SHARDCAST_BEFORE_LABEL [${BEFORE_LABEL:-none}]
  --alternate         reverse the server order every other round (A B, B A, A B, ...), so
                      neither of two builds always runs first
  --perf-viewers N    viewers for the instrumented (perf stat) run, 0 for none [${PERF_VIEWERS}]
  --no-perf           no instrumented run
  --no-iperf          no iperf3 loopback ceiling (and iperf3 need not be installed)
  --port-base P       first of the 127.0.0.1 ports used (one per run) [${PORT_BASE}]
  --out DIR           where run reports go [a new /tmp/fanout.XXXXXX]
  --no-install        do not apt-get install missing packages
Builds use cargo's defaults; CARGO_BUILD_JOBS=1 limits them to one job.
EOF
}

while [ $# -gt 0 ]; do
    case "$1" in
    --quick)
        VIEWERS="100 500"
        EXTRA=""
        ROUNDS=1
        DURATION=8
        PERF_VIEWERS=500
        ;;
    --viewers) VIEWERS="$2"; shift ;;
    --extra) EXTRA="$2"; shift ;;
    --rounds) ROUNDS="$2"; shift ;;
    --duration) DURATION="$2"; shift ;;
    --servers) SERVERS="$2"; shift ;;
    --read-interval) READ_INTERVALS="$2"; shift ;;
    --streams) STREAMS="$2"; shift ;;
    --bitrate) BITRATE="$2"; shift ;;
    --before-bin) BEFORE_BIN="$2"; shift ;;
    --before-label) BEFORE_LABEL="$2"; shift ;;
    --alternate) ALTERNATE=1 ;;
    --perf-viewers) PERF_VIEWERS="$2"; shift ;;
    --no-perf) USE_PERF=0 ;;
    --no-iperf) IPERF=0 ;;
    --port-base) PORT_BASE="$2"; shift ;;
    --out) OUT="$2"; shift ;;
    --no-install) INSTALL=0 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "fanout.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

exec 3>&2 # log lines go to the original stderr, whatever a command's redirection says
log() { echo "[fanout $(date +%H:%M:%S)] $*" >&3; }

# ---- cleanup: every server we start is recorded here and stopped on exit -------------------
STARTED_PIDS=()
LOAD_PID=""
PERF_PID=""
# reap PID: gives a process told to stop 5 s to exit, then kills it, and collects it.
reap() {
    local pid=$1
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local pid
    if [ -n "$LOAD_PID" ]; then
        # The load generator (the subshell's child): stop it, it still writes its report.
        pkill -TERM -P "$LOAD_PID" 2>/dev/null || true
        wait "$LOAD_PID" 2>/dev/null || true
        LOAD_PID=""
    fi
    if [ -n "$PERF_PID" ]; then
        pkill -TERM -P "$PERF_PID" 2>/dev/null || true
        kill -TERM "$PERF_PID" 2>/dev/null || true
        wait "$PERF_PID" 2>/dev/null || true
        PERF_PID=""
    fi
    for pid in "${STARTED_PIDS[@]:-}"; do
        [ -n "$pid" ] || continue
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
        fi
    done
    for pid in "${STARTED_PIDS[@]:-}"; do
        if [ -n "$pid" ]; then reap "$pid"; fi
    done
    STARTED_PIDS=()
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

# ---- prerequisites -------------------------------------------------------------------------
# What the server list needs: nginx only when it is in it, the ideal sender only when it is,
# a before binary when shardcast-before is.
NEED_NGINX=0
NEED_IDEAL=0
NEED_BEFORE=0
read -r -a NAMES <<<"$SERVERS"
for s in "${NAMES[@]}"; do
    case "${s%%+*}" in
    nginx) NEED_NGINX=1 ;;
    ideal | ideal-nodelay) [ "$STREAMS" -gt 1 ] || NEED_IDEAL=1 ;;
    shardcast-before) NEED_BEFORE=1 ;;
    esac
done
if [ "$NEED_BEFORE" = 1 ]; then
    if [ -z "$BEFORE_BIN" ]; then
        echo "fanout.sh: shardcast-before needs --before-bin PATH (or SHARDCAST_BEFORE_BIN)" >&2
        exit 2
    fi
    if [ ! -f "$BEFORE_BIN" ] || [ ! -x "$BEFORE_BIN" ]; then
        echo "fanout.sh: --before-bin $BEFORE_BIN is not an executable file" >&2
        exit 2
    fi
    # Absolute, and a copy of it for the run (below): a rebuild cannot change it under us.
    BEFORE_BIN="$(cd "$(dirname "$BEFORE_BIN")" && pwd)/$(basename "$BEFORE_BIN")"
fi

NGINX_MODULE=/usr/lib/nginx/modules/ngx_rtmp_module.so
MISSING_PKGS=()
if [ "$NEED_NGINX" = 1 ]; then
    command -v nginx >/dev/null || MISSING_PKGS+=(nginx)
    [ -f "$NGINX_MODULE" ] || MISSING_PKGS+=(libnginx-mod-rtmp)
fi
if [ "$IPERF" = 1 ] && ! command -v iperf3 >/dev/null; then
    MISSING_PKGS+=(iperf3)
fi
if [ "${#MISSING_PKGS[@]}" -gt 0 ]; then
    if [ "$INSTALL" = 1 ]; then
        log "installing ${MISSING_PKGS[*]} (Debian packages)"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${MISSING_PKGS[@]}" >/dev/null
    else
        echo "fanout.sh: ${MISSING_PKGS[*]} missing (and --no-install given; --no-iperf" \
            "skips iperf3, a --servers list without nginx skips nginx)" >&2
        exit 1
    fi
fi
for tool in taskset ss pgrep python3 cargo; do
    command -v "$tool" >/dev/null || { echo "fanout.sh: $tool is required" >&2; exit 1; }
done
if [ "$USE_PERF" = 1 ] && [ "$PERF_VIEWERS" != 0 ]; then
    if ! command -v perf >/dev/null ||
        ! perf stat -e sock:sock_send_length -x, true >/dev/null 2>&1; then
        log "perf with the sock:sock_send_length tracepoint is not available: no instrumented run"
        USE_PERF=0
    fi
fi
if [ "$(nproc --all)" -lt 2 ]; then
    echo "fanout.sh: needs at least 2 CPUs (load generator on CPU 0, server on CPU 1)" >&2
    exit 1
fi
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true
NOFILE="$(ulimit -n)" # what every server and the load generator get
[ "$NOFILE" = unlimited ] && NOFILE=65536

log "building shardcast, shardcast-load$([ "$NEED_IDEAL" = 1 ] && echo " and the ideal sender") (release)"
(cd "$REPO" && cargo build --release -q -p shardcast --bin shardcast && cargo build --release -q -p shardcast-load)
IDEAL_BIN=""
if [ "$NEED_IDEAL" = 1 ]; then
    IDEAL_BIN="$(cd "$REPO" && cargo build --release -q -p shardcast --bench ideal_sender --message-format=json |
        python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "ideal_sender" and m.get("executable"):
        print(m["executable"])')"
    [ -n "$IDEAL_BIN" ] || { echo "fanout.sh: the ideal sender's build produced no executable" >&2; exit 1; }
fi
TARGET_DIR="$(cd "$REPO" && cargo metadata --format-version 1 --no-deps | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
SHARDCAST_BIN="$TARGET_DIR/release/shardcast"
LOAD_BIN="$TARGET_DIR/release/shardcast-load"
for b in "$SHARDCAST_BIN" "$LOAD_BIN" ${IDEAL_BIN:+"$IDEAL_BIN"}; do
    [ -x "$b" ] || { echo "fanout.sh: build did not produce $b" >&2; exit 1; }
done

if [ -z "$OUT" ]; then
    OUT="$(mktemp -d /tmp/fanout.XXXXXX)"
fi
mkdir -p "$OUT"
MANIFEST="$OUT/runs.tsv"
: >"$MANIFEST"
log "reports go to $OUT"
if [ "$NEED_BEFORE" = 1 ]; then
    # Run copies of both shardcast binaries, so that a build during the run cannot change what
    # either label measures; the run's own copies are kept with its reports.
    mkdir -p "$OUT/bin"
    cp "$BEFORE_BIN" "$OUT/bin/shardcast-before"
    cp "$SHARDCAST_BIN" "$OUT/bin/shardcast"
    BEFORE_SRC="$BEFORE_BIN"
    BEFORE_BIN="$OUT/bin/shardcast-before"
    SHARDCAST_BIN="$OUT/bin/shardcast"
    if cmp -s "$BEFORE_BIN" "$SHARDCAST_BIN"; then
        log "note: $BEFORE_SRC and this tree's build are the same file content: shardcast-before and shardcast-1 run identical code"
    fi
    log "shardcast-before runs $BEFORE_SRC${BEFORE_LABEL:+ ($BEFORE_LABEL)}; shardcast-1 and the other shardcast servers run this tree's build"
fi

# ---- is the machine quiet? ---------------------------------------------------------------
# CPU 0 and CPU 1 busy (not idle, iowait, steal or niced) over 2 s before the first run: other
# work there shows up in every number (for two builds compared, in their difference too).
busy_now() {
    local a b
    a="$(grep -E '^cpu[01] ' /proc/stat)"
    sleep 2
    b="$(grep -E '^cpu[01] ' /proc/stat)"
    printf '%s\n%s\n' "$a" "$b" | awk '
        { n = $1; if (n in t0) { tot = 0; for (i = 2; i <= 9; i++) tot += $i - v0[n, i];
              idle = ($5 - v0[n, 5]) + ($6 - v0[n, 6]) + ($9 - v0[n, 9]) + ($3 - v0[n, 3]);
              printf "%s %.2f ", n, tot ? (tot - idle) / tot : 0 }
          else { t0[n] = 1; for (i = 2; i <= 9; i++) v0[n, i] = $i } }'
}
BUSY_BEFORE="$(busy_now)"
if echo "$BUSY_BEFORE" | awk '{ exit !($2 > 0.15 || $4 > 0.15) }'; then
    log "WARNING: the machine is not quiet (busy before the run: $BUSY_BEFORE); other work on CPU 0 or 1 shows up in every number"
fi

# ---- what was run, for RESULTS.md ----------------------------------------------------------
{
    echo "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "commit=$(git -C "$REPO" rev-parse HEAD 2>/dev/null || echo unknown)"
    echo "dirty=$(git -C "$REPO" status --porcelain --untracked-files=no 2>/dev/null | wc -l)"
    echo "nproc=$(nproc --all)"
    echo "kernel=$(uname -r)"
    echo "cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
    if command -v nginx >/dev/null; then
        echo "nginx=$(nginx -v 2>&1 | sed 's/^nginx version: //')"
    else
        echo "nginx=absent"
    fi
    echo "nginx_rtmp=$(dpkg-query -W -f='${Version}' libnginx-mod-rtmp 2>/dev/null || echo unknown)"
    echo "iperf3=$(dpkg-query -W -f='${Version}' iperf3 2>/dev/null || echo unknown)"
    echo "shardcast_sha256=$(sha256sum "$SHARDCAST_BIN" | cut -d' ' -f1)"
    if [ "$NEED_BEFORE" = 1 ]; then
        echo "before_bin=$BEFORE_SRC"
        echo "before_sha256=$(sha256sum "$BEFORE_BIN" | cut -d' ' -f1)"
        echo "before_label=$BEFORE_LABEL"
    fi
    echo "alternate=$ALTERNATE"
    echo "loadavg_start=$(cut -d' ' -f1-3 /proc/loadavg)"
    echo "busy_before=$BUSY_BEFORE"
    echo "viewers=$VIEWERS"
    echo "extra=$EXTRA"
    echo "rounds=$ROUNDS"
    echo "duration=$DURATION"
    echo "servers=$SERVERS"
    echo "verify_every=$VERIFY_EVERY"
    echo "read_intervals=$READ_INTERVALS"
    echo "streams=$STREAMS"
    echo "bitrate=$BITRATE"
} >"$OUT/meta.txt"

# ---- servers -------------------------------------------------------------------------------
PORT=$PORT_BASE
SERVER_MAIN=""  # the pid to stop
SERVER_PIDS=""  # comma-separated pids to measure (nginx: master and worker)

wait_listening() { # port pid
    local i
    for i in $(seq 100); do
        if ss -Htln "sport = :$1" | grep -q .; then return 0; fi
        kill -0 "$2" 2>/dev/null || return 1
        sleep 0.05
    done
    return 1
}

# canonical NAME: the name with aliases spelled out (shardcast-1-nagle is
# shardcast-1+viewer.tcp_nodelay=false); server_base NAME: the kind without its overrides.
canonical() {
    case "$1" in
    shardcast-1-nagle) echo "shardcast-1+viewer.tcp_nodelay=false" ;;
    shardcast-1-nagle+*) echo "shardcast-1+viewer.tcp_nodelay=false+${1#shardcast-1-nagle+}" ;;
    *) echo "$1" ;;
    esac
}
server_base() { local c; c="$(canonical "$1")"; echo "${c%%+*}"; }
# A name usable in file names.
file_tag() { printf '%s' "$1" | tr -c 'A-Za-z0-9._+=,-' '_'; }

start_server() { # name port
    local name=$1 port=$2 dir
    dir="$OUT/servers/$(file_tag "$1")-$2"
    local full kind overrides=()
    full="$(canonical "$name")"
    kind="${full%%+*}"
    if [ "$full" != "$kind" ]; then
        IFS=+ read -r -a overrides <<<"${full#*+}"
        case "$kind" in
        shardcast-*) ;;
        *) echo "fanout.sh: $name: only shardcast servers take config overrides" >&2; exit 2 ;;
        esac
    fi
    mkdir -p "$dir"
    case "$kind" in
    nginx)
        mkdir -p "$dir/logs"
        cat >"$dir/nginx.conf" <<EOF
load_module $NGINX_MODULE;
daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile $NOFILE;
pid $dir/nginx.pid;
error_log $dir/logs/error.log warn;
events { worker_connections $((NOFILE - 100)); }
rtmp {
    server {
        listen 127.0.0.1:$port;
        chunk_size 4096;
        application live { live on; }
    }
}
EOF
        taskset -c 1 nginx -p "$dir/" -c "$dir/nginx.conf" -e "$dir/logs/error.log" \
            >"$dir/stdout.log" 2>&1 &
        ;;
    shardcast-1 | shardcast-all | shardcast-2on1 | shardcast-before)
        # The base configuration, then the overrides (TABLE.KEY=VALUE), one TOML table each.
        local base=(server.listen="\"127.0.0.1:$port\"" server.shutdown_timeout_ms=500
            log.filter='"warn"')
        case "$kind" in
        shardcast-all) base+=(server.shards='"auto"') ;;
        shardcast-2on1) base+=(server.shards=2 "server.cpus=[1, 1]") ;;
        *) base+=(server.shards=1 "server.cpus=[1]") ;; # shardcast-1, shardcast-before
        esac
        # No HTTP-FLV port for RTMP runs (a binary from before it existed knows no [http]).
        [ "$kind" = shardcast-before ] || base+=(http.listen='""')
        local bin=$SHARDCAST_BIN
        if [ "$kind" = shardcast-before ]; then bin=$BEFORE_BIN; fi
        if ! python3 - "${base[@]}" "${overrides[@]}" >"$dir/shardcast.toml" <<'PY'
import sys
tables = {}
for item in sys.argv[1:]:
    path, sep, value = item.partition("=")
    table, dot, key = path.rpartition(".")
    if not sep or not dot or not table or not key:
        sys.exit(f"fanout.sh: override {item!r} is not TABLE.KEY=VALUE")
    tables.setdefault(table, {})[key] = value  # a later one (an override) wins
for table, keys in tables.items():
    print(f"[{table}]")
    for key, value in keys.items():
        print(f"{key} = {value}")
PY
        then
            return 1
        fi
        if [ "$kind" != shardcast-all ]; then
            taskset -c 1 "$bin" --config "$dir/shardcast.toml" >"$dir/stdout.log" 2>&1 &
        else
            "$bin" --config "$dir/shardcast.toml" >"$dir/stdout.log" 2>&1 &
        fi
        ;;
    ideal)
        taskset -c 1 "$IDEAL_BIN" --listen "127.0.0.1:$port" >"$dir/stdout.log" 2>&1 &
        ;;
    ideal-nodelay)
        taskset -c 1 "$IDEAL_BIN" --listen "127.0.0.1:$port" --nodelay >"$dir/stdout.log" 2>&1 &
        ;;
    *)
        echo "fanout.sh: unknown server $kind" >&2
        exit 2
        ;;
    esac
    SERVER_MAIN=$!
    STARTED_PIDS+=("$SERVER_MAIN")
    if ! wait_listening "$port" "$SERVER_MAIN"; then
        log "$kind did not start listening on 127.0.0.1:$port; its output:"
        cat "$dir"/stdout.log "$dir"/logs/error.log 2>/dev/null >&2 || true
        return 1
    fi
    SERVER_PIDS=$SERVER_MAIN
    if [ "$kind" = nginx ]; then
        local worker
        worker="$(pgrep -P "$SERVER_MAIN" | head -n1)"
        [ -n "$worker" ] && SERVER_PIDS="$SERVER_MAIN,$worker"
    fi
}

stop_server() {
    local pid=$SERVER_MAIN
    [ -n "$pid" ] || return 0
    kill -TERM "$pid" 2>/dev/null || true
    reap "$pid"
    local keep=()
    for p in "${STARTED_PIDS[@]}"; do [ "$p" = "$pid" ] || keep+=("$p"); done
    STARTED_PIDS=("${keep[@]:-}")
    SERVER_MAIN=""
}

# Syscalls counted one by one in the instrumented run (those that exist on this kernel).
SYSCALL_EVENTS=()
if [ "$USE_PERF" = 1 ]; then
    for sc in write writev sendto sendmsg read readv recvfrom recvmsg epoll_wait epoll_pwait \
        poll ppoll io_uring_enter nanosleep clock_nanosleep futex; do
        if perf stat -e "syscalls:sys_enter_$sc" -x, true >/dev/null 2>&1; then
            SYSCALL_EVENTS+=(-e "syscalls:sys_enter_$sc")
        fi
    done
fi

# CPU 0 and CPU 1 as a whole (/proc/stat: anything else running there, softirq, steal), the
# IPIs each received, and the CPU time of ksoftirqd/0 and /1, which the servers' own
# /proc/PID/stat does not include.
KSOFTIRQD="$(for c in 0 1; do pgrep -x "ksoftirqd/$c" | head -n1; done | tr '\n' ' ')"
cpu_snapshot() {
    grep -E '^cpu[01] ' /proc/stat
    # Rescheduling and function-call IPIs each CPU received: cross-CPU wakeups.
    grep -E '^ *(RES|CAL):' /proc/interrupts | awk '{print "ipi", $1, $2, $3}'
    local p
    for p in $KSOFTIRQD; do
        [ -r "/proc/$p/stat" ] && echo "ksoftirqd $(cut -d')' -f2- "/proc/$p/stat" | awk '{print $12 + $13}')"
    done
    return 0
}

# ---- one run -------------------------------------------------------------------------------
ramp_for() { # viewers -> viewers per second: the ramp takes about 2 s (at least 200/s)
    local r=$(($1 / 2))
    [ "$r" -lt 200 ] && r=200
    echo "$r"
}

# manifest_line KIND VIEWERS ROUND JSON GEN_USER GEN_SYS WALL STATUS PERF: one run, with the
# read mode and stream count it ran with. VIEWERS is per stream.
manifest_line() {
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$@" "$READ" "$STREAMS" >>"$MANIFEST"
}

# run_one KIND VIEWERS ROUND [perf]: appends one line to the manifest; returns 0 when it ran.
# VIEWERS is per stream; the read mode is $READ.
run_one() {
    local kind=$1 viewers=$2 round=$3 perf=${4:-}
    local port=$PORT
    PORT=$((PORT + 1))
    local tag
    tag="$(file_tag "$kind")-s$STREAMS-v$viewers-read$READ-r$round${perf:+-perf}"
    local json="$OUT/$tag.json"
    if ! start_server "$kind" "$port"; then
        manifest_line "$kind" "$viewers" "$round" "$json" 0 0 0 "start-failed" "$perf"
        stop_server
        return 1
    fi
    local ramp total=$((viewers * STREAMS))
    ramp=$(ramp_for "$total")
    if [ -n "$perf" ]; then
        # Counts over a window of the steady state: from 2 s after the ramp to 2 s before the end.
        local ramp_s=$(((total + ramp - 1) / ramp))
        local start=$((ramp_s + 2)) window=$((DURATION - ramp_s - 4))
        [ "$window" -lt 2 ] && window=2
        echo "window_s=$window" >"$OUT/$tag.perf.meta"
        (
            sleep "$start"
            exec perf stat -x, -o "$OUT/$tag.perf.csv" \
                -e task-clock -e context-switches -e raw_syscalls:sys_enter \
                -e sock:sock_send_length -e sock:sock_send_length --filter 'ret < 0' \
                -e sock:sock_recv_length -e io_uring:io_uring_submit_req \
                "${SYSCALL_EVENTS[@]}" \
                -p "$SERVER_PIDS" -- sleep "$window"
        ) >/dev/null 2>&1 &
        PERF_PID=$!
    fi
    log "$tag: $kind on 127.0.0.1:$port (pids $SERVER_PIDS), $STREAMS x $viewers viewers, read interval $READ, ${DURATION} s"
    local rc=0 t0 t1 p pid_args=()
    for p in ${SERVER_PIDS//,/ }; do pid_args+=(--server-pid "$p"); done
    cpu_snapshot >"$OUT/$tag.stat0"
    t0=$(date +%s.%N)
    # bash's `time` gives the load generator's CPU time over the whole run, as a fallback: its
    # report has its own over the steady state (load_generator), which the tables prefer.
    # In the background, so that a signal reaches the trap at once (which then stops it).
    (TIMEFORMAT='%U %S'; time taskset -c 0 "$LOAD_BIN" \
        --url "rtmp://127.0.0.1:$port/live/load-{n}" --streams "$STREAMS" --viewers "$viewers" \
        --read-interval "$READ" \
        --ramp "$ramp" --duration "${DURATION}s" --source synthetic --bitrate "$BITRATE" --fps 30 \
        --gop 2s --verify-every "$VERIFY_EVERY" --threads 1 --no-progress --json "$json" \
        "${pid_args[@]}" \
        >"$OUT/$tag.txt" 2>"$OUT/$tag.stderr") 2>"$OUT/$tag.time" &
    LOAD_PID=$!
    wait "$LOAD_PID" || rc=$?
    LOAD_PID=""
    t1=$(date +%s.%N)
    cpu_snapshot >"$OUT/$tag.stat1"
    if [ -n "$PERF_PID" ]; then
        wait "$PERF_PID" 2>/dev/null || true
        PERF_PID=""
    fi
    local status=ok
    [ "$rc" = 0 ] || status="load-exit-$rc"
    kill -0 "$SERVER_MAIN" 2>/dev/null || status="server-died"
    local gen_user gen_sys
    read -r gen_user gen_sys <"$OUT/$tag.time" || { gen_user=0; gen_sys=0; }
    manifest_line "$kind" "$viewers" "$round" "$json" \
        "$gen_user" "$gen_sys" "$(python3 -c "print(round($t1 - $t0, 3))")" "$status" "$perf"
    stop_server
    sleep 1
    [ "$status" = ok ]
}

# keeps_up KIND VIEWERS: every round of KIND at VIEWERS ran and had nobody lagging, failing,
# disconnected, and nothing lost, reordered or corrupted.
keeps_up() {
    python3 "$BENCH_DIR/fanout_report.py" --manifest "$MANIFEST" --keeps-up "$1" "$2" \
        --read "$READ" --streams "$STREAMS"
}

# ---- iperf3: the loopback ceiling ----------------------------------------------------------
run_iperf() { # round
    local round=$1 mode
    for mode in fwd rev; do
        local port=$PORT
        PORT=$((PORT + 1))
        taskset -c 1 iperf3 -s -1 -B 127.0.0.1 -p "$port" >"$OUT/iperf3-$mode-r$round.server.log" 2>&1 &
        local spid=$!
        STARTED_PIDS+=("$spid")
        wait_listening "$port" "$spid" || { log "iperf3 -s did not start"; }
        local flags=()
        [ "$mode" = rev ] && flags=(-R)
        log "iperf3 ($mode) round $round on 127.0.0.1:$port"
        taskset -c 0 iperf3 -c 127.0.0.1 -p "$port" -t 5 -J "${flags[@]}" >"$OUT/iperf3-$mode-r$round.json" 2>&1 || true
        SERVER_MAIN=$spid
        stop_server
    done
}

# ---- the benchmark ----------------------------------------------------------------------
read -r -a SERVER_LIST <<<"$SERVERS"
if [ "$STREAMS" -gt 1 ]; then
    KEEP=()
    for s in "${SERVER_LIST[@]}"; do
        case "$(server_base "$s")" in
        ideal | ideal-nodelay) log "skipping $s: the ideal sender serves one stream only" ;;
        *) KEEP+=("$s") ;;
        esac
    done
    SERVER_LIST=("${KEEP[@]}")
fi
for s in "${SERVER_LIST[@]}"; do
    case "$(server_base "$s")" in
    nginx | shardcast-1 | shardcast-all | shardcast-2on1 | shardcast-before | ideal | ideal-nodelay) ;;
    *) echo "fanout.sh: unknown server $s" >&2; exit 2 ;;
    esac
done

if [ "$IPERF" = 1 ]; then
    for round in $(seq "$ROUNDS"); do run_iperf "$round"; done
fi

LEVELS="$VIEWERS $EXTRA"
read -r -a BASE_LEVELS <<<"$VIEWERS"
for READ in $READ_INTERVALS; do
    # Each read mode is a sweep of its own: every server starts active again.
    declare -A ACTIVE=()
    for s in "${SERVER_LIST[@]}"; do ACTIVE[$s]=1; done
    for v in $LEVELS; do
        is_extra=1
        for b in "${BASE_LEVELS[@]}"; do [ "$b" = "$v" ] && is_extra=0; done
        if [ "$is_extra" = 1 ]; then
            # Past the standard counts, only while nginx and 1-shard shardcast both keep up.
            if [ -z "${ACTIVE[nginx]:-}" ] || [ -z "${ACTIVE[shardcast-1]:-}" ]; then
                log "read interval $READ: stopping before $v viewers: nginx or shardcast-1 no longer keeps up (or is not in --servers)"
                break
            fi
        fi
        for round in $(seq "$ROUNDS"); do
            ROUND_LIST=("${SERVER_LIST[@]}")
            if [ "$ALTERNATE" = 1 ] && [ $((round % 2)) = 0 ]; then
                ROUND_LIST=()
                for ((i = ${#SERVER_LIST[@]} - 1; i >= 0; i--)); do ROUND_LIST+=("${SERVER_LIST[$i]}"); done
            fi
            for s in "${ROUND_LIST[@]}"; do
                [ -n "${ACTIVE[$s]:-}" ] || continue
                run_one "$s" "$v" "$round" || true
            done
        done
        for s in "${SERVER_LIST[@]}"; do
            [ -n "${ACTIVE[$s]:-}" ] || continue
            if ! keeps_up "$s" "$v"; then
                log "$s does not keep up at $STREAMS x $v viewers, read interval $READ: its series stops here"
                unset "ACTIVE[$s]"
            fi
        done
    done
    unset ACTIVE

    if [ "$USE_PERF" = 1 ] && [ "$PERF_VIEWERS" != 0 ]; then
        for s in "${SERVER_LIST[@]}"; do
            run_one "$s" "$PERF_VIEWERS" 1 perf || true
        done
    fi
done

echo "loadavg_end=$(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/meta.txt"
python3 "$BENCH_DIR/fanout_report.py" --manifest "$MANIFEST" --out "$OUT" | tee "$OUT/table.txt"
log "done: reports, table.txt, table.md and summary.json in $OUT"
