#!/usr/bin/env bash
# netem.sh makes this machine's network slow and lossy, as
# `tc qdisc add dev eth0 root netem delay DELAY JITTER loss LOSS%` would, on
# kernels without sch_netem: iptables queues every packet leaving eth0
# (NFQUEUE, queue 0) to the userspace netem of cmd/netem, run by systemd as
# the transient unit cube-netem (its log, with counts every 10 s:
# journalctl -t cube-netem; stop prints the final counts).
#
#   netem.sh start DELAY JITTER LOSS   e.g. start 100ms 50ms 5 (Go durations, percent)
#   netem.sh stop
#
# Both are idempotent; start again with other figures replaces them. The
# rule has --queue-bypass: while no netem is bound (starting, stopped,
# crashed) packets pass unshaped, never blocked. The drill runs it as
#   docker exec MACHINE /vagrant/deploy/machine/netem.sh start 100ms 50ms 5
set -euo pipefail
unit=cube-netem
queue=0
iface=${NETEM_IFACE:-eth0}
rule=(POSTROUTING -o "$iface" -j NFQUEUE --queue-num "$queue" --queue-bypass)
log() { echo "netem.sh: $*"; }
usage() { echo "usage: $0 start DELAY JITTER LOSS | stop" >&2; exit 2; }

# bound: a program is bound to the queue (the kernel's list of bound queues).
bound() { awk -v q="$queue" '$1 == q { f = 1 } END { exit !f }' /proc/net/netfilter/nfnetlink_queue 2>/dev/null; }

stop_unit() {
	systemctl stop "$unit" 2>/dev/null || true
	systemctl reset-failed "$unit" 2>/dev/null || true
}

case ${1:-} in
start)
	[[ $# -eq 4 ]] || usage
	delay=$2 jitter=$3 loss=$4
	install -m 0755 /vagrant/bin/machine/netem /usr/local/bin/netem
	stop_unit
	systemd-run --quiet --collect --unit="$unit" --property=SyslogIdentifier="$unit" --description="userspace netem on $iface: $delay ± $jitter, $loss% loss" \
		/usr/local/bin/netem --queue "$queue" --delay "$delay" --jitter "$jitter" --loss "$loss"
	for _ in $(seq 1 50); do bound && break; sleep 0.1; done
	sleep 0.2 # a netem that could not bind (another program holds the queue) has exited by now
	if ! bound || ! systemctl is-active --quiet "$unit"; then
		log "netem did not bind queue $queue:"
		journalctl -t "$unit" --no-pager -n 3 -o cat 2>/dev/null || true
		stop_unit
		exit 1
	fi
	iptables -t mangle -C "${rule[@]}" 2>/dev/null || iptables -t mangle -I "${rule[@]}"
	log "$iface: delay $delay ± $jitter, loss $loss%"
	;;
stop)
	[[ $# -eq 1 ]] || usage
	while iptables -t mangle -C "${rule[@]}" 2>/dev/null; do iptables -t mangle -D "${rule[@]}"; done
	was=$(systemctl is-active "$unit" 2>/dev/null || true)
	stop_unit
	log "$iface: netem off"
	if [[ $was == active ]]; then
		# The final counts; journald may take a moment to write them.
		sleep 0.2
		journalctl -t "$unit" --no-pager -n 1 -o cat 2>/dev/null || true
	fi
	;;
*) usage ;;
esac
