#!/usr/bin/env bash
# machine-image.sh builds cube-machine:<tag>, the root file system of one
# Cube machine for Vagrant's docker provider and `make drill`: Debian 12
# (bookworm) from Debian's own packages with systemd, a Docker Engine,
# iptables and iproute2 (tc netem), imported as an image whose command is
# /sbin/init. Nothing comes from a registry: debootstrap fetches the packages
# from the Debian mirror, `docker import` turns the tree into an image.
#
# Usage: scripts/machine-image.sh [image:tag]   (default cube-machine:bookworm)
#
# The image is built once and reused: when the tag exists nothing happens
# (CUBE_MACHINE_REBUILD=1 rebuilds). debootstrap is installed from Debian's
# packages when it is missing. The build takes about 2 minutes and 600 MB.
# Environment: DEBIAN_MIRROR (http://deb.debian.org/debian), CUBE_MACHINE_WORK
# (where the tree is built; default /var/tmp/cube-machine-rootfs, removed after).
set -euo pipefail

tag=${1:-cube-machine:bookworm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
work=${CUBE_MACHINE_WORK:-/var/tmp/cube-machine-rootfs}
packages=docker.io,iptables,iproute2,procps,ca-certificates,curl,systemd-sysv,dbus,kmod,less,netcat-openbsd

if [[ ${CUBE_MACHINE_REBUILD:-0} != 1 ]] && docker image inspect "$tag" >/dev/null 2>&1; then
	echo "machine-image: $tag is there (CUBE_MACHINE_REBUILD=1 builds it again)"
	exit 0
fi
if [[ $(id -u) != 0 ]]; then
	echo "machine-image: debootstrap needs root" >&2
	exit 1
fi
if ! command -v debootstrap >/dev/null 2>&1; then
	echo "machine-image: installing debootstrap from Debian's packages"
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi

rm -rf "$work"
mkdir -p "$work"
trap 'rm -rf "$work"' EXIT
start=$(date +%s)
echo "machine-image: debootstrap bookworm into $work (packages: $packages)"
debootstrap --variant=minbase --include="$packages" bookworm "$work" "$mirror" >"$work.log" 2>&1 || {
	echo "machine-image: debootstrap failed; the end of its log:" >&2
	tail -20 "$work.log" >&2
	exit 1
}
rm -f "$work.log"

# A machine, not a chroot: no apt caches, a hostname from the container,
# and units that make no sense inside a container masked.
rm -rf "$work"/var/cache/apt/archives/*.deb "$work"/var/lib/apt/lists/*
: >"$work/etc/machine-id"
for unit in systemd-resolved.service systemd-timesyncd.service getty@.service \
	console-getty.service systemd-networkd-wait-online.service apt-daily.timer apt-daily-upgrade.timer; do
	ln -sf /dev/null "$work/etc/systemd/system/$unit"
done
# Cube's machine boot step (deploy/machine/cube-machine.service) comes from
# the checkout mounted at /vagrant, so changing it needs no new image.
mkdir -p "$work/etc/systemd/system/multi-user.target.wants" "$work/etc/cube"
cp "$(dirname "$0")/../deploy/machine/cube-machine.service" "$work/etc/systemd/system/"
ln -sf ../cube-machine.service "$work/etc/systemd/system/multi-user.target.wants/cube-machine.service"

tar -C "$work" -c . | docker import \
	-c 'CMD ["/sbin/init"]' -c 'ENV container=docker' \
	-m "cube machine: debian bookworm, systemd, docker.io" - "$tag" >/dev/null
echo "machine-image: $tag built in $(( $(date +%s) - start )) s"
