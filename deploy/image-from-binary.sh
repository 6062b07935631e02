#!/usr/bin/env bash
# Builds a container image from a relay binary built on this machine, with no base image to
# pull (deploy/Containerfile.prebuilt: FROM scratch plus the binary, the shared libraries it
# links, the default config, and user 10001).
#
#   deploy/image-from-binary.sh [--bin target/release/shardcast] [--tag localhost/shardcast:dev]
#
# Uses podman, else buildah, else docker. Prints the tag it built.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=target/release/shardcast
tag=localhost/shardcast:dev
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) bin=$2; shift 2 ;;
    --tag) tag=$2; shift 2 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "image-from-binary.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ -x "$bin" ] || { echo "image-from-binary.sh: no binary at $bin (cargo build --release)" >&2; exit 1; }

context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
root=$context/rootfs
install -d "$root/usr/local/bin" "$root/etc/shardcast" "$root/tmp"
chmod 1777 "$root/tmp"
if command -v strip >/dev/null 2>&1; then
  strip -o "$root/usr/local/bin/shardcast" "$bin"
else
  cp "$bin" "$root/usr/local/bin/shardcast"
fi
chmod 0755 "$root/usr/local/bin/shardcast"
# The dynamic loader and every library the binary links, at the paths it names.
for lib in $(ldd "$bin" | grep -o '/[^ ]*'); do
  # 0755: the kernel maps the dynamic loader as an executable.
  install -D -m 0755 "$(readlink -f "$lib")" "$root$lib"
done
install -m 0644 config/shardcast.toml "$root/etc/shardcast/shardcast.toml"
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
fi
printf 'root:x:0:0:root:/:/nonexistent\nshardcast:x:10001:10001:shardcast:/nonexistent:/nonexistent\n' \
  > "$root/etc/passwd"
printf 'root:x:0:\nshardcast:x:10001:\n' > "$root/etc/group"
cp deploy/Containerfile.prebuilt "$context/Containerfile"

if command -v podman >/dev/null 2>&1; then
  podman build --quiet -f "$context/Containerfile" -t "$tag" "$context" >/dev/null
elif command -v buildah >/dev/null 2>&1; then
  buildah bud --quiet -f "$context/Containerfile" -t "$tag" "$context" >/dev/null
else
  docker build --quiet -f "$context/Containerfile" -t "$tag" "$context" >/dev/null
fi
echo "$tag"
