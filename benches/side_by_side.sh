# Sourced by benches/flash_crowd.sh, benches/ingest.sh and benches/two_shards.sh: one server
# at a time on CPU 1, shardcast (one shard) or nginx-rtmp (one worker), each on
# 127.0.0.1:$PORT, for side-by-side runs with the load generator on CPU 0; and, for
# two_shards.sh, `shardcast-2`: two shards pinned to CPUs 0 and 1, the first sharing its core
# with the load generator. Before sourcing, set REPO, PORT and, for a shardcast admin
# listener, ADMIN_PORT (empty: none). Defines BIN, LOAD, WORK, SERVER, MEASURED and
# wait_port, start_server, stop_server, track and untrack (a helper process to stop on exit),
# tracked (run a command so that it is stopped on exit);
# removes WORK and stops the server and tracked helpers however the script exits.

cargo build --release -p shardcast -p shardcast-load >/dev/null 2>&1
BIN="$REPO/target/release/shardcast"
LOAD="$REPO/target/release/shardcast-load"
NGINX_MODULE=/usr/lib/nginx/modules/ngx_rtmp_module.so
WORK="$(mktemp -d)"
SERVER=""
MEASURED=""
# Every process to stop on exit has a file named after its pid here, removed once it is
# stopped: runs happen in $(...) subshells, whose variables the exit trap cannot see.
mkdir "$WORK/running"
track() { : >"$WORK/running/$1"; }
untrack() { rm -f "$WORK/running/$1"; }
# Runs a command in the background, tracked, and waits for it: bash runs a signal's trap only
# once a foreground command has finished, but at once during `wait`.
tracked() {
    "$@" &
    local pid=$! rc=0
    track "$pid"
    wait "$pid" || rc=$?
    untrack "$pid"
    return "$rc"
}
cleanup() {
    local f
    for f in "$WORK"/running/*; do [ -e "$f" ] && kill "${f##*/}" 2>/dev/null; done
    wait 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
ulimit -n 65536 2>/dev/null || true

cat >"$WORK/shardcast.toml" <<EOF2
[server]
cpus = [1]
listen = "127.0.0.1:$PORT"
[admin]
listen = "${ADMIN_PORT:+127.0.0.1:$ADMIN_PORT}"
[http]
listen = ""
[log]
filter = "warn"
[app.live]
EOF2
sed 's/^cpus = \[1\]$/cpus = [0, 1]/' "$WORK/shardcast.toml" >"$WORK/shardcast-2.toml"
mkdir -p "$WORK/nginx/logs"
cat >"$WORK/nginx/nginx.conf" <<EOF2
load_module $NGINX_MODULE;
daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile 65536;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/logs/error.log warn;
events { worker_connections 60000; }
rtmp {
    server {
        listen 127.0.0.1:$PORT;
        chunk_size 4096;
        application live { live on; }
    }
}
EOF2

wait_port() { for _ in $(seq 200); do (echo >/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; return 1; }

# Starts a server; sets SERVER (the process to stop) and MEASURED (the process that works:
# nginx's worker, not its master).
start_server() {
    case "$1" in
        shardcast)
            taskset -c 1 "$BIN" --config "$WORK/shardcast.toml" --shards 1 >"$WORK/server.log" 2>&1 &
            SERVER=$!
            track "$SERVER"
            MEASURED=$SERVER
            ;;
        shardcast-2)
            taskset -c 0,1 "$BIN" --config "$WORK/shardcast-2.toml" --shards 2 >"$WORK/server.log" 2>&1 &
            SERVER=$!
            track "$SERVER"
            MEASURED=$SERVER
            ;;
        nginx)
            taskset -c 1 nginx -p "$WORK/nginx/" -c "$WORK/nginx/nginx.conf" \
                -e "$WORK/nginx/logs/error.log" >"$WORK/server.log" 2>&1 &
            SERVER=$!
            track "$SERVER"
            wait_port "$PORT"
            MEASURED=$(pgrep -P "$SERVER" | head -1)
            ;;
    esac
    wait_port "$PORT"
}

stop_server() { kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; untrack "$SERVER"; SERVER=""; sleep 1; }
