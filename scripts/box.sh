#!/usr/bin/env bash
# box.sh builds cube/bookworm, the Vagrant box of the libvirt provider
# (Vagrantfile): a Debian 12 (bookworm) VM disk built from Debian's own
# packages with debootstrap (no Vagrant Cloud, no registry): Linux, systemd,
# OpenSSH, sudo, rsync, a Docker Engine, iptables and iproute2, booted by
# extlinux from an MBR-partitioned disk. It has the `vagrant` user with
# Vagrant's insecure public key (Vagrant swaps it for a key of its own at the
# first `vagrant up`) and passwordless sudo, eth0 on DHCP (systemd-networkd),
# and deploy/machine/cube-machine.service enabled, as scripts/machine-image.sh
# does for the docker provider.
#
# Usage: scripts/box.sh   (root: loop devices, mount, debootstrap)
#
# Output: build/box/cube-bookworm.box (metadata.json, Vagrantfile, box.img in
# qcow2), added to Vagrant as cube/bookworm. When the box is already added
# nothing happens (CUBE_BOX_REBUILD=1 builds it again).
# Environment: DEBIAN_MIRROR (http://deb.debian.org/debian), CUBE_BOX_WORK
# (the raw disk and its mount point; default /var/tmp/cube-box, removed
# after), CUBE_BOX_SIZE (the disk's size in GB, default 16).
set -euo pipefail

name=cube/bookworm
root=$(cd "$(dirname "$0")/.." && pwd)
out=$root/build/box
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
work=${CUBE_BOX_WORK:-/var/tmp/cube-box}
size=${CUBE_BOX_SIZE:-16}
packages=linux-image-amd64,initramfs-tools,systemd-sysv,udev,dbus,kmod,openssh-server,sudo,rsync,docker.io,iptables,iproute2,procps,ca-certificates,curl,less,netcat-openbsd
log() { echo "box: $*"; }

if [[ ${CUBE_BOX_REBUILD:-0} != 1 ]] && vagrant box list 2>/dev/null | grep -q "^$name .*libvirt"; then
	log "$name is there (CUBE_BOX_REBUILD=1 builds it again)"
	exit 0
fi
if [[ $(id -u) != 0 ]]; then
	echo "box: building the disk needs root (loop devices, mount, debootstrap)" >&2
	exit 1
fi
need=()
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
command -v extlinux >/dev/null 2>&1 || need+=(extlinux)
[[ -f /usr/lib/syslinux/mbr/mbr.bin ]] || need+=(syslinux-common)
command -v qemu-img >/dev/null 2>&1 || need+=(qemu-utils)
command -v sfdisk >/dev/null 2>&1 || need+=(fdisk)
if ((${#need[@]})); then
	log "installing ${need[*]} from Debian's packages"
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
command -v vagrant >/dev/null 2>&1 || { echo "box: vagrant is not installed (apt-get install vagrant vagrant-libvirt)" >&2; exit 1; }
pubkey=$(find /usr/share/rubygems-integration /opt/vagrant /usr/lib/ruby -path '*/keys/vagrant.pub' 2>/dev/null | head -1 || true)
[[ -n $pubkey ]] || { echo "box: cannot find Vagrant's insecure public key (keys/vagrant.pub)" >&2; exit 1; }

disk=$work/disk.raw
mnt=$work/root
loop=
cleanup() {
	if mountpoint -q "$mnt" 2>/dev/null; then
		umount -R "$mnt" 2>/dev/null || umount -R -l "$mnt" 2>/dev/null || true
	fi
	[[ -n $loop ]] && { losetup -d "$loop" 2>/dev/null || true; }
	if [[ -f $disk ]]; then
		losetup -j "$disk" -O NAME -n 2>/dev/null | while read -r l; do losetup -d "$l" || true; done
	fi
	# Never remove through a mount that would not go.
	if grep -q " $work" /proc/mounts; then
		echo "box: $work is still mounted; not removing it" >&2
	else
		rm -rf "$work"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
cleanup
mkdir -p "$mnt" "$out"
start=$(date +%s)

# One MBR partition from 1 MiB to the end, bootable; ext4 without 64bit,
# which extlinux cannot boot from.
truncate -s "${size}G" "$disk"
sfdisk -q "$disk" <<<$'label: dos\nstart=2048, type=83, bootable'
dd if=/usr/lib/syslinux/mbr/mbr.bin of="$disk" bs=440 count=1 conv=notrunc status=none
offset=$((2048 * 512))
loop=$(losetup --show -f -o "$offset" "$disk")
mkfs.ext4 -q -F -L cube-root -O ^64bit "$loop"
uuid=$(blkid -s UUID -o value "$loop")
mount "$loop" "$mnt"

log "debootstrap bookworm into the disk (packages: $packages)"
debootstrap --variant=minbase --include="$packages" bookworm "$mnt" "$mirror" >"$out/debootstrap.log" 2>&1 || {
	echo "box: debootstrap failed; the end of $out/debootstrap.log:" >&2
	tail -20 "$out/debootstrap.log" >&2
	exit 1
}
log "debootstrap done after $(($(date +%s) - start)) s"

kver=$(basename "$(ls -1 "$mnt"/boot/vmlinuz-* | sort -V | tail -1)")
kver=${kver#vmlinuz-}
[[ -f $mnt/boot/initrd.img-$kver ]] || { echo "box: no initrd for $kver" >&2; exit 1; }

# A machine of its own: identity made at first boot (machine-id, SSH host
# keys), no apt caches.
echo cube >"$mnt/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tcube\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$mnt/etc/hosts"
printf 'UUID=%s\t/\text4\terrors=remount-ro\t0\t1\n' "$uuid" >"$mnt/etc/fstab"
: >"$mnt/etc/machine-id"
rm -f "$mnt/var/lib/dbus/machine-id" "$mnt"/etc/ssh/ssh_host_*
rm -rf "$mnt"/var/cache/apt/archives/*.deb "$mnt"/var/lib/apt/lists/*
# No RSA host key: making one took 59 s of the first boot under TCG.
printf 'HostKey /etc/ssh/ssh_host_ed25519_key\nHostKey /etc/ssh/ssh_host_ecdsa_key\n' >"$mnt/etc/ssh/sshd_config.d/host-keys.conf"
cat >"$mnt/etc/systemd/system/ssh-host-keys.service" <<'UNIT'
[Unit]
Description=SSH host keys of this machine (made at first boot)
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -q -t ed25519 -N "" -f /etc/ssh/ssh_host_ed25519_key
ExecStart=/usr/bin/ssh-keygen -q -t ecdsa -N "" -f /etc/ssh/ssh_host_ecdsa_key

[Install]
WantedBy=multi-user.target
UNIT

# eth0 on DHCP (net.ifnames=0 below); Vagrant writes the private network's
# address (50-vagrant-eth1.network) itself.
cat >"$mnt/etc/systemd/network/10-eth0.network" <<'NET'
[Match]
Name=eth0

[Network]
DHCP=yes
NET
echo 'nameserver 127.0.0.1' >"$mnt/etc/resolv.conf"

# The vagrant user: Vagrant's insecure key, sudo without a password, docker.
chroot "$mnt" useradd -m -s /bin/bash -G sudo,docker vagrant
chroot "$mnt" usermod -p '*' vagrant
install -d -m 0700 -o 1000 -g 1000 "$mnt/home/vagrant/.ssh"
install -m 0600 -o 1000 -g 1000 "$pubkey" "$mnt/home/vagrant/.ssh/authorized_keys"
echo 'vagrant ALL=(ALL) NOPASSWD:ALL' >"$mnt/etc/sudoers.d/vagrant"
chmod 0440 "$mnt/etc/sudoers.d/vagrant"

for unit in systemd-networkd.service ssh-host-keys.service ssh.service docker.service; do
	chroot "$mnt" systemctl enable "$unit" >/dev/null 2>&1
done
for unit in apt-daily.timer apt-daily-upgrade.timer systemd-networkd-wait-online.service; do
	ln -sf /dev/null "$mnt/etc/systemd/system/$unit"
done
# Cube's machine boot step comes from the checkout synced to /vagrant, as on
# the docker provider (scripts/machine-image.sh).
mkdir -p "$mnt/etc/systemd/system/multi-user.target.wants" "$mnt/etc/cube"
cp "$root/deploy/machine/cube-machine.service" "$mnt/etc/systemd/system/"
ln -sf ../cube-machine.service "$mnt/etc/systemd/system/multi-user.target.wants/cube-machine.service"

# extlinux boots the kernel straight from the partition (the MBR above
# chains to it); the console is on the serial port as well.
mkdir -p "$mnt/boot/extlinux"
cat >"$mnt/boot/extlinux/extlinux.conf" <<CONF
SERIAL 0 115200
DEFAULT debian
PROMPT 0
TIMEOUT 1
LABEL debian
  LINUX /boot/vmlinuz-$kver
  INITRD /boot/initrd.img-$kver
  APPEND root=UUID=$uuid ro console=tty0 console=ttyS0,115200n8 net.ifnames=0 biosdevname=0
CONF
extlinux --install "$mnt/boot/extlinux" >/dev/null 2>&1

umount "$mnt"
losetup -d "$loop"
loop=

log "disk → qcow2"
rm -rf "$out/pack"
mkdir -p "$out/pack"
qemu-img convert -O qcow2 "$disk" "$out/pack/box.img"
cat >"$out/pack/metadata.json" <<JSON
{
  "provider": "libvirt",
  "format": "qcow2",
  "virtual_size": $size
}
JSON
cat >"$out/pack/Vagrantfile" <<'VF'
# The box cube/bookworm (scripts/box.sh): Debian 12 booted by extlinux.
Vagrant.configure("2") do |config|
  config.vm.provider :libvirt do |lv|
    lv.disk_bus = "virtio"
    lv.nic_model_type = "virtio"
  end
end
VF
tar -C "$out/pack" -cf "$out/cube-bookworm.box" metadata.json Vagrantfile box.img
rm -rf "$out/pack"
vagrant box add --force --name "$name" "$out/cube-bookworm.box" >/dev/null
log "$name built and added in $(($(date +%s) - start)) s ($(du -h "$out/cube-bookworm.box" | cut -f1), kernel $kver)"
