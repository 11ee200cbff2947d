#!/usr/bin/env bash
# boot.sh sets up one Cube machine at boot: it installs cube from the checkout
# (mounted at /vagrant), loads the task images this checkout built (no
# registry), writes the agent config of the machine's role, and starts the
# systemd unit. It runs at every boot (cube-machine.service) and is idempotent:
# a machine that reboots keeps its disk (raft log, task records, containers).
#
# What the machine is comes from CUBE_MACHINE_* variables, read from
# /etc/cube/machine.env (the libvirt provisioner writes it) or, on the docker
# provider, from the container's environment (PID 1's):
#   CUBE_MACHINE_ROLE      manager | worker
#   CUBE_MACHINE_NAME      m1, w1, … (default: the host name)
#   CUBE_MACHINE_ADDR      this machine's address on the cluster network
#   CUBE_MACHINE_MANAGERS  every manager as NAME=ADDR, space-separated
#   CUBE_MACHINE_FAST      1 for --fast timings (default 0: production timings)
set -euo pipefail
log() { echo "cube-machine: $*"; }

if [[ -f /etc/cube/machine.env ]]; then
	# shellcheck disable=SC1091
	source /etc/cube/machine.env
else
	while IFS= read -r -d '' kv; do
		case $kv in CUBE_MACHINE_*=*) export "${kv?}" ;; esac
	done </proc/1/environ
fi
role=${CUBE_MACHINE_ROLE:?CUBE_MACHINE_ROLE is not set (manager or worker)}
name=${CUBE_MACHINE_NAME:-$(hostname)}
addr=${CUBE_MACHINE_ADDR:?CUBE_MACHINE_ADDR is not set}
managers=${CUBE_MACHINE_MANAGERS:?CUBE_MACHINE_MANAGERS is not set}
fast=false
[[ ${CUBE_MACHINE_FAST:-0} == 1 ]] && fast=true

src=/vagrant/bin/machine
# changed is set when the binary, the config or the unit differs from what
# runs: then the unit restarts, else it only starts (at boot).
changed=0
if ! cmp -s "$src/cube" /usr/local/bin/cube; then
	install -m 0755 "$src/cube" /usr/local/bin/cube
	log "installed cube from $src/cube"
	changed=1
fi

# The machine's own Docker Engine must answer before images load or a worker starts.
for _ in $(seq 1 120); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
docker info >/dev/null 2>&1 || { log "docker does not answer"; exit 1; }
for tar in "$src"/images/*.tar; do
	[[ -f $tar ]] || continue
	id=$(cat "${tar%.tar}.id" 2>/dev/null || true)
	if [[ -n $id ]] && docker image inspect "$id" >/dev/null 2>&1; then continue; fi
	docker load -q -i "$tar"
done

# The machine's identity (scripts/machine-credentials.sh made it): its own
# certificate and key, the CA certificate, the gossip key and, on a manager,
# the operator token the cluster starts with. Never the CA's key.
# Readable by root and the group cube only: the manager's unit runs as a
# dynamic user in that group (SupplementaryGroups=cube).
getent group cube >/dev/null || groupadd --system cube
install -d -m 0750 -g cube /etc/cube/tls
for f in cube-ca.pem "$role-$name.pem" "$role-$name-key.pem"; do
	if ! cmp -s "$src/tls/$f" "/etc/cube/tls/$f"; then
		install -m 0640 -g cube "$src/tls/$f" "/etc/cube/tls/$f"
		changed=1
	fi
done
gossip_key=$(cat "$src/gossip.key")
if [[ $role == manager ]] && ! cmp -s "$src/operator.token" /etc/cube/operator.token; then
	install -m 0640 -g cube "$src/operator.token" /etc/cube/operator.token
fi
tls_block="tls {
  ca_file   = \"/etc/cube/tls/cube-ca.pem\"
  cert_file = \"/etc/cube/tls/$role-$name.pem\"
  key_file  = \"/etc/cube/tls/$role-$name-key.pem\"
}
encrypt = \"$gossip_key\""

peers=() joins=()
for m in $managers; do
	peers+=("\"${m%%=*}=${m#*=}:6556\"")
	joins+=("\"${m#*=}:6557\"")
done
join_list=$(IFS=,; echo "${joins[*]}")
mkdir -p /etc/cube
case $role in
manager)
	cat >/etc/cube/$role.hcl.new <<HCL
# Written by /vagrant/deploy/machine/boot.sh at boot.
id             = "$name"
data_dir       = "/var/lib/cube/manager"
bind_addr      = "0.0.0.0"
advertise_addr = "$addr"
ports {
  http   = 5556
  raft   = 6556
  gossip = 6557
}
peers     = [$(IFS=,; echo "${peers[*]}")]
join      = [$join_list]
fast      = $fast
log_level = "info"
$tls_block
bootstrap_token_file = "/etc/cube/operator.token"
HCL
	;;
worker)
	cat >/etc/cube/$role.hcl.new <<HCL
# Written by /vagrant/deploy/machine/boot.sh at boot.
name           = "$name"
data_dir       = "/var/lib/cube/worker"
bind_addr      = "0.0.0.0"
advertise_addr = "$addr"
ports {
  http   = 5555
  gossip = 6555
}
join      = [$join_list]
fast      = $fast
log_level = "info"
$tls_block
HCL
	;;
*) log "CUBE_MACHINE_ROLE must be manager or worker, not $role"; exit 1 ;;
esac

# The file holds the gossip key: root and the group cube only.
chgrp cube /etc/cube/$role.hcl.new
chmod 0640 /etc/cube/$role.hcl.new
if ! cmp -s /etc/cube/$role.hcl.new /etc/cube/$role.hcl; then
	mv /etc/cube/$role.hcl.new /etc/cube/$role.hcl
	changed=1
fi
rm -f /etc/cube/$role.hcl.new
if ! cmp -s /vagrant/deploy/systemd/cube-"$role".service /etc/systemd/system/cube-"$role".service; then
	install -m 0644 /vagrant/deploy/systemd/cube-"$role".service /etc/systemd/system/
	systemctl daemon-reload
	changed=1
fi
systemctl enable cube-"$role".service >/dev/null 2>&1
# This unit is ordered before cube-manager/cube-worker: queue the start, do
# not wait for it; a restart when something changed.
if [[ $changed == 1 ]]; then
	systemctl restart --no-block cube-"$role".service
else
	systemctl start --no-block cube-"$role".service
fi
log "$name is a $role at $addr (fast=$fast), managers: $managers"
