# Sourced by benches/flash_crowd.sh, benches/ingest.sh and benches/two_shards.sh: one server
# at a time on CPU 1, shardcast (one shard) or nginx-rtmp (one worker), each on
# 127.0.0.1:$PORT, for side-by-side runs with the load generator on CPU 0; and, for
# two_shards.sh, `shardcast-2`: two shards pinned to CPUs 0 and 1, the first sharing its core
# with the load generator. Before sourcing, set REPO, PORT and, for a shardcast admin
# listener, ADMIN_PORT (empty: none). Builds on benches/bench_setup.sh (BIN, LOAD, WORK,
# track, untrack, tracked, wait_port, the clean-up on exit) and adds SERVER, MEASURED,
# start_server and stop_server.

source "$REPO/benches/bench_setup.sh"
NGINX_MODULE=/usr/lib/nginx/modules/ngx_rtmp_module.so
MEASURED=""
SERVER=""
ulimit -n 65536 2>/dev/null || true

shardcast_config "$WORK/shardcast.toml" "$PORT" "${ADMIN_PORT:-}" "" ""
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
