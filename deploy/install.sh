#!/usr/bin/env bash
# Builds shardcast and installs it as a systemd service:
#   /usr/local/bin/shardcast                  the binary (replaced when it changed)
#   /etc/shardcast/shardcast.toml             the config (only if none exists: yours is kept)
#   /etc/systemd/system/shardcast.service     the unit
#   /etc/sysctl.d/90-shardcast.conf           kernel settings (applied at once)
#
# Run it from a checkout as your normal user: it builds with your cargo, then uses sudo for the
# steps that write system files. Running it again is safe; it reports what it changed. It
# never starts, stops or restarts the service: a running relay keeps its viewers until you
# decide to restart it.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target_dir="${CARGO_TARGET_DIR:-$repo/target}"

if [[ $EUID -eq 0 ]]; then
    as_root=()
else
    as_root=(sudo)
fi

say() { printf 'install: %s\n' "$*"; }

# Copies $1 to $2 with mode $3 unless $2 already has the same content. Prints what happened,
# and returns 0 only if it wrote the file, so callers can react to a change.
install_file() {
    local source="$1" destination="$2" mode="$3"
    if [[ -f $destination ]] && cmp -s "$source" "$destination"; then
        say "unchanged $destination"
        return 1
    fi
    # Written beside the target and renamed over it, so a running binary is never modified in
    # place ("Text file busy") and a failed copy never leaves half a file.
    "${as_root[@]}" install -d -m 0755 "$(dirname "$destination")"
    "${as_root[@]}" install -m "$mode" "$source" "$destination.new"
    "${as_root[@]}" mv -f "$destination.new" "$destination"
    say "installed $destination"
}

say "building the release binary in $repo"
(cd "$repo" && cargo build --release --package shardcast --bin shardcast)
binary="$target_dir/release/shardcast"
[[ -x $binary ]] || { say "build produced no $binary" >&2; exit 1; }

binary_changed=no
if install_file "$binary" /usr/local/bin/shardcast 0755; then
    binary_changed=yes
fi

# The config is the operator's: install the shipped default only where there is none.
if [[ -e /etc/shardcast/shardcast.toml ]]; then
    say "kept existing /etc/shardcast/shardcast.toml (compare: diff /etc/shardcast/shardcast.toml $repo/config/shardcast.toml)"
else
    install_file "$repo/config/shardcast.toml" /etc/shardcast/shardcast.toml 0644 || true
fi

unit_changed=no
if install_file "$repo/deploy/shardcast.service" /etc/systemd/system/shardcast.service 0644; then
    unit_changed=yes
fi

install_file "$repo/deploy/sysctl.d/90-shardcast.conf" /etc/sysctl.d/90-shardcast.conf 0644 || true
# Applied every run, so settings changed by hand since the last run are put back.
"${as_root[@]}" sysctl -q -p /etc/sysctl.d/90-shardcast.conf
say "applied /etc/sysctl.d/90-shardcast.conf"

if [[ -d /run/systemd/system ]]; then
    if [[ $unit_changed == yes ]]; then
        "${as_root[@]}" systemctl daemon-reload
        say "reloaded systemd units"
    fi
    if systemctl is-active --quiet shardcast; then
        if [[ $binary_changed == yes || $unit_changed == yes ]]; then
            say "shardcast is running the old version: sudo systemctl restart shardcast"
        fi
    else
        say "to start now and at boot: sudo systemctl enable --now shardcast"
    fi
else
    say "systemd is not running here; start the relay with: /usr/local/bin/shardcast --config /etc/shardcast/shardcast.toml"
fi
