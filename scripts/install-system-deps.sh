#!/usr/bin/env bash
# What the container tests need on a Debian bookworm machine, installed idempotently (run as root):
# rootful podman with runc, Debian's docker-compose 1.29 (it talks to `podman system service`),
# and debootstrap to make the local Python base image (there is no registry to pull one from).
#
# Also writes /etc/containers/containers.conf: crun, podman's default runtime, rejects this
# machine kind's hybrid cgroup v1/v2 layout, and podman's default ulimits (nofile 1048576) are above
# the hard limits here, so every container would fail to start without these two settings.
#
# Not root, or not Debian: prints what is missing and exits 1, so CI fails loudly.
set -euo pipefail

packages=(podman runc docker-compose debootstrap)
commands=(podman runc docker-compose debootstrap)
conf=/etc/containers/containers.conf

missing=()
for c in "${commands[@]}"; do
  command -v "$c" >/dev/null 2>&1 || missing+=("$c")
done

if ((${#missing[@]})); then
  if [[ $EUID -ne 0 ]] || ! command -v apt-get >/dev/null; then
    echo "install-system-deps: missing ${missing[*]}; run this script as root on Debian" >&2
    exit 1
  fi
  echo "install-system-deps: installing ${packages[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${packages[@]}" \
    containernetworking-plugins iptables ca-certificates >/dev/null
fi

# Ulimits capped at this machine's hard limits; nproc at most 32768.
nofile=$(ulimit -Hn)
nproc=$(ulimit -Hu)
[[ $nofile == unlimited ]] && nofile=1048576
[[ $nproc == unlimited || $nproc -gt 32768 ]] && nproc=32768
want=$(cat <<EOF
# Written by preloader's scripts/install-system-deps.sh (the container tests).
[containers]
default_ulimits = ["nofile=${nofile}:${nofile}", "nproc=${nproc}:${nproc}"]

[engine]
# crun rejects this kernel's hybrid cgroup layout; runc works.
runtime = "runc"
EOF
)
if [[ ! -f $conf ]] || [[ "$(cat "$conf")" != "$want" ]]; then
  if [[ $EUID -ne 0 ]]; then
    echo "install-system-deps: $conf needs rewriting; run this script as root" >&2
    exit 1
  fi
  mkdir -p "$(dirname "$conf")"
  printf '%s\n' "$want" > "$conf"
  echo "install-system-deps: wrote $conf" >&2
fi
