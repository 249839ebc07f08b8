#!/usr/bin/env bash
# Make the local Python base image the container tests build on: Debian bookworm (python3.11,
# venv, pip, CA certificates) by debootstrap from the mirror apt uses, piped into `podman import`.
# There is no registry to pull python:3.11-slim from on the CI machine kind.
#
#   scripts/base-image.sh [IMAGE]      default IMAGE: localhost/preloader-base:bookworm
#
# Idempotent: an existing IMAGE is kept (remove it with `podman rmi IMAGE` to rebuild). The
# machine's extra CA certificates (/usr/local/share/ca-certificates/) go into the image, or pip
# inside `podman build` cannot reach the package index through this machine's egress proxy.
# Podman runs with the project's configuration (CONTAINERS_CONF, from scripts/containers-conf.sh).
# Prints the image name on stdout.
set -euo pipefail

image="${1:-localhost/preloader-base:bookworm}"
suite=bookworm
CONTAINERS_CONF="$("$(dirname "$0")/containers-conf.sh")"
export CONTAINERS_CONF

if podman image exists "$image"; then
  echo "$image"
  exit 0
fi

# The mirror apt is configured with (deb822 sources first, then the one-line format).
mirror=$(sed -n 's/^URIs: *\([^ ]*\/debian\)\/* *$/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1 || true)
if [[ -z $mirror ]]; then
  mirror=$(awk '$1 == "deb" && $2 ~ /\/debian\/?$/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
fi
mirror="${mirror:-http://deb.debian.org/debian}"

root=$(mktemp -d /var/tmp/preloader-base.XXXXXX)
trap 'rm -rf "$root"' EXIT
echo "base-image: debootstrap $suite from $mirror" >&2
debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
  "$suite" "$root" "$mirror" >"$root.log" 2>&1 || { tail -n 30 "$root.log" >&2; exit 1; }
rm -f "$root.log"

if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
  chroot "$root" update-ca-certificates >/dev/null 2>&1
fi
# What python:3.11-slim leaves out too: downloaded packages, apt lists, docs.
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
  "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/locale/*

tar --numeric-owner -C "$root" -c . |
  podman import -q --change 'CMD ["python3"]' --change 'ENV LANG=C.UTF-8' - "$image" >/dev/null
echo "base-image: made $image" >&2
echo "$image"
