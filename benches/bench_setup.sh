# Sourced by the bench scripts that run shardcast (side_by_side.sh and the scripts built on
# it, edge_hop.sh, rtmps.sh, vod.sh): the part every run needs. Before sourcing, set REPO.
#
# Builds the relay and the load generator (cargo's output shown only if the build fails)
# and defines BIN and LOAD (the binaries), WORK (a scratch directory, removed on exit);
# track and untrack (a process to stop on exit), tracked (runs a command so that it is
# stopped on exit and a signal acts at once); wait_port PORT; and shardcast_config FILE PORT
# ADMIN_PORT SERVER_KEYS APP_KEYS: a relay config on CPU 1 listening on 127.0.0.1:PORT only
# (ADMIN_PORT empty: no admin listener; SERVER_KEYS and APP_KEYS: lines added to [server] and
# [app.live]). Every tracked process is stopped and WORK removed however the script exits.

cd "$REPO"
if ! build_output=$(cargo build --release -p shardcast -p shardcast-load 2>&1); then
    echo "$build_output" >&2
    echo "the build failed" >&2
    exit 1
fi
BIN="$REPO/target/release/shardcast"
LOAD="$REPO/target/release/shardcast-load"
WORK="$(mktemp -d)"
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

wait_port() { for _ in $(seq 200); do (echo >/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; return 1; }

shardcast_config() { # FILE PORT ADMIN_PORT SERVER_KEYS APP_KEYS
    cat >"$1" <<EOF2
[server]
cpus = [1]
listen = "127.0.0.1:$2"
$4
[admin]
listen = "${3:+127.0.0.1:$3}"
[http]
listen = ""
[log]
filter = "warn"
[app.live]
$5
EOF2
}
