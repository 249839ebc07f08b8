#!/usr/bin/env bash
# What the container and shared-volume tests need on a Debian bookworm machine, installed idempotently
# (run as root):
#
# - Installs, with apt-get and only if one of podman, runc, docker-compose, debootstrap, catatonit or
#   bindfs is missing, the Debian packages podman, runc, docker-compose (1.29; it talks to `podman system
#   service`), debootstrap (to make the local Python base image: there is no registry to pull one from),
#   catatonit (podman builds the pause image of a pod's infra container from it: without it every
#   `podman kube play` of tests/test_kubernetes.py fails), bindfs (FUSE mounts that stand in for nodes
#   sharing one volume, in tests/test_fleet.py), tinyproxy (a real CONNECT proxy, in
#   tests/test_proxy_tunnel.py; its service is not started), prometheus and prometheus-node-exporter (a
#   real Prometheus scraping `preloader run` and node_exporter's textfile collector, in tests/test_metrics*.py;
#   the tests start their own on free loopback ports and the packages' services are not started),
#   kubernetes-client where no kubectl is
#   (kustomize in tests/test_kubernetes.py), containernetworking-plugins, iptables and ca-certificates.
#   Beyond what those packages install, it changes nothing of the machine's configuration: no file under
#   /etc/containers/ is written.
# - Writes .containers/containers.conf in this checkout (git-ignored), by scripts/containers-conf.sh:
#   runc and ulimits within this machine's hard limits. Podman reads it only where CONTAINERS_CONF
#   points at it, as the tests and scripts/ do; the tests write it again themselves if it is missing.
#
# Not root, or not Debian, with a package missing: prints what is missing and exits 1, so CI fails loudly.
set -euo pipefail

packages=(podman runc docker-compose debootstrap catatonit bindfs tinyproxy prometheus prometheus-node-exporter)
commands=(podman runc docker-compose debootstrap catatonit bindfs tinyproxy prometheus prometheus-node-exporter)

missing=()
for c in "${commands[@]}"; do
  command -v "$c" >/dev/null 2>&1 || missing+=("$c")
done
# kubectl (for `kubectl kustomize` in tests/test_kubernetes.py): any will do; Debian's is kubernetes-client,
# installed only where there is none, so that a kubectl of another origin is left alone.
if ! command -v kubectl >/dev/null 2>&1; then
  missing+=(kubectl)
  packages+=(kubernetes-client)
fi

if ((${#missing[@]})); then
  if [[ $EUID -ne 0 ]] || ! command -v apt-get >/dev/null; then
    echo "install-system-deps: missing ${missing[*]}; run this script as root on Debian" >&2
    exit 1
  fi
  echo "install-system-deps: installing ${packages[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  # Debian's postinst scripts start prometheus, node_exporter and tinyproxy as services: a policy-rc.d that
  # refuses (101) keeps them stopped, for this install only, where the machine has none of its own.
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${packages[@]}" \
    containernetworking-plugins iptables ca-certificates >/dev/null
fi

"$(dirname "$0")/containers-conf.sh" >/dev/null
