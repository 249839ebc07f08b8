#!/usr/bin/env bash
# The podman configuration of this project's container tests and scripts, written to a file of the
# checkout (git-ignored), never to the machine's /etc/containers/:
#
#   scripts/containers-conf.sh [FILE]      default FILE: .containers/containers.conf in this checkout
#
# Everything that runs podman here (tests/test_containers.py, scripts/base-image.sh,
# scripts/container_figures.py) passes the file in CONTAINERS_CONF, which makes podman read it
# instead of /etc/containers/containers.conf; `podman system service` started that way gives the
# containers docker-compose asks it for the same settings. By hand:
#
#   CONTAINERS_CONF="$(scripts/containers-conf.sh)" podman run ...
#
# Two settings, without which every container fails to start on this machine kind: runc, because
# crun (podman's default runtime) rejects its hybrid cgroup v1/v2 layout; and ulimits within its hard
# limits, because podman's defaults for root (nofile 1048576, nproc 4194304) are above them.
#
# Needs no root. Rewrites FILE only when its contents change (atomically: a temporary file renamed
# into place, so a concurrent run never reads half a file). Prints FILE's absolute path on stdout.
set -euo pipefail

conf="${1:-$(cd "$(dirname "$0")/.." && pwd)/.containers/containers.conf}"
mkdir -p "$(dirname "$conf")"
conf="$(cd "$(dirname "$conf")" && pwd)/$(basename "$conf")"

# Ulimits capped at this machine's hard limits; nproc at most 32768.
nofile=$(ulimit -Hn)
nproc=$(ulimit -Hu)
[[ $nofile == unlimited ]] && nofile=1048576
[[ $nproc == unlimited || $nproc -gt 32768 ]] && nproc=32768
want=$(cat <<EOF
# Written by preloader's scripts/containers-conf.sh; podman reads it through CONTAINERS_CONF.
[containers]
default_ulimits = ["nofile=${nofile}:${nofile}", "nproc=${nproc}:${nproc}"]

[engine]
# crun rejects this kernel's hybrid cgroup layout; runc works.
runtime = "runc"
EOF
)
if [[ ! -f $conf ]] || [[ "$(cat "$conf")" != "$want" ]]; then
  tmp=$(mktemp "$conf.XXXXXX")
  printf '%s\n' "$want" > "$tmp"
  chmod 644 "$tmp"
  mv -f "$tmp" "$conf"
  echo "containers-conf: wrote $conf" >&2
fi
echo "$conf"
