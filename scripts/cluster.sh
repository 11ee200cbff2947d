#!/usr/bin/env bash
# cluster.sh runs a Cube cluster on this machine: 3 managers and 3 workers on
# 127.0.0.1, in the background, with logs and data under one folder.
#
#   scripts/cluster.sh up     start (or report the cluster already running)
#   scripts/cluster.sh down   stop every process, remove the task containers
#                             the workers started, and delete the data
#   scripts/cluster.sh status show what runs
#
# Ports (all 127.0.0.1):
#   node  HTTP  raft  gossip
#   m1    5556  6556  6557
#   m2    5566  6566  6567
#   m3    5576  6576  6577
#   w1    5555  -     6555
#   w2    5565  -     6565
#   w3    5575  -     6575
#
# Timings are the tight ones (--fast): raft and gossip notice a dead node in
# about a second. CUBE_CLUSTER_DIR (default ./.cluster) holds logs/ and data/.
#
# Security is on: the first `up` makes the cluster's identity in
# $CUBE_CLUSTER_DIR: tls/ (a CA, a certificate per node, a client
# certificate), gossip.key and operator.token, and writes env, the shell file
# of CUBE_MANAGERS, CUBE_TOKEN, CUBE_CACERT, CUBE_CLIENT_CERT and
# CUBE_CLIENT_KEY that clients source (bin/cube reads it by itself when run
# from this directory). `down` keeps them; delete the directory to start over.
# CUBE_INSECURE=1 runs every node with --insecure instead (no TLS, no tokens).
# CUBE_PPROF=1 also serves each node's Go profiles on its HTTP port + 2000
# (m1 127.0.0.1:7556/debug/pprof/, w1 :7555, ...).
set -euo pipefail

cd "$(dirname "$0")/.."
dir=${CUBE_CLUSTER_DIR:-$PWD/.cluster}
bin=${CUBE_BIN:-$PWD/bin/cube}
managers=(m1 m2 m3)
workers=(w1 w2 w3)
peers="m1=127.0.0.1:6556,m2=127.0.0.1:6566,m3=127.0.0.1:6576"
manager_gossip="127.0.0.1:6557,127.0.0.1:6567,127.0.0.1:6577"

tlsdir=$dir/tls

# credentials makes what the nodes and clients need, once.
credentials() {
	mkdir -p "$tlsdir"
	chmod 700 "$dir" "$tlsdir"
	[[ -f $tlsdir/cube-ca.pem ]] || "$bin" tls ca create --dir "$tlsdir" >/dev/null
	local n role
	for n in "${managers[@]}" "${workers[@]}" operator; do
		case $n in m*) role=manager ;; w*) role=worker ;; *) role=client ;; esac
		[[ -f $tlsdir/$role-$n.pem ]] || "$bin" tls cert create --$role --name "$n" --dir "$tlsdir" --host 127.0.0.1,localhost >/dev/null
	done
	[[ -f $dir/gossip.key ]] || (umask 077 && "$bin" keygen >"$dir/gossip.key")
	[[ -f $dir/operator.token ]] || (umask 077 && "$bin" keygen --token >"$dir/operator.token")
	local scheme=https
	[[ -n ${CUBE_INSECURE:-} ]] && scheme=http
	(
		umask 077
		cat >"$dir/env" <<ENV
# Cube client settings for the cluster of make cluster: source this file
# (bin/cube reads it by itself when run from $(dirname "$dir")).
export CUBE_MANAGERS=$scheme://127.0.0.1:5556,$scheme://127.0.0.1:5566,$scheme://127.0.0.1:5576
export CUBE_TOKEN=$(cat "$dir/operator.token")
ENV
		if [[ -z ${CUBE_INSECURE:-} ]]; then
			cat >>"$dir/env" <<ENV
export CUBE_CACERT=$tlsdir/cube-ca.pem
export CUBE_CLIENT_CERT=$tlsdir/client-operator.pem
export CUBE_CLIENT_KEY=$tlsdir/client-operator-key.pem
ENV
		fi
	)
}

# secflags prints the security flags of node n.
secflags() {
	if [[ -n ${CUBE_INSECURE:-} ]]; then
		echo --insecure
		return
	fi
	local role=worker
	[[ $1 == m* ]] && role=manager
	echo --ca-file "$tlsdir/cube-ca.pem" --cert-file "$tlsdir/$role-$1.pem" --key-file "$tlsdir/$role-$1-key.pem" --encrypt "$(cat "$dir/gossip.key")"
	[[ $role == manager ]] && echo --bootstrap-token-file "$dir/operator.token"
	return 0
}

# curl_api is curl with the cluster's credentials: curl_api <path-and-host...>.
curl_api() {
	if [[ -n ${CUBE_INSECURE:-} ]]; then
		curl -sf -m 2 "http://$1"
	else
		curl -sf -m 2 --cacert "$tlsdir/cube-ca.pem" -H "X-Cube-Token: $(cat "$dir/operator.token")" "https://$1"
	fi
}

port() { # port <node> <kind>
	local i=${1:1}
	i=$((i - 1))
	case $1:$2 in
	m*:http) echo $((5556 + 10 * i)) ;;
	m*:raft) echo $((6556 + 10 * i)) ;;
	m*:gossip) echo $((6557 + 10 * i)) ;;
	w*:http) echo $((5555 + 10 * i)) ;;
	w*:gossip) echo $((6555 + 10 * i)) ;;
	esac
}

running() { # running <node>; a killed process not yet reaped (a zombie) is not running
	local pidfile=$dir/run/$1.pid
	[[ -f $pidfile ]] || return 1
	local st
	st=$(ps -o stat= -p "$(cat "$pidfile")" 2>/dev/null) || return 1
	[[ -n $st && $st != Z* ]]
}

start() { # start <node> <args...>
	local node=$1
	shift
	if [[ -n ${CUBE_PPROF:-} ]]; then
		set -- "$@" --pprof "127.0.0.1:$(($(port "$node" http) + 2000))"
	fi
	mkdir -p "$dir/logs" "$dir/run" "$dir/data"
	if running "$node"; then
		return
	fi
	nohup "$bin" "$@" >>"$dir/logs/$node.log" 2>&1 &
	echo $! >"$dir/run/$node.pid"
}

start_manager() { # start_manager <m>
	local m=$1
	# shellcheck disable=SC2046 # secflags' words are paths and a base64 key
	start "$m" manager --id "$m" --fast \
		--http "127.0.0.1:$(port "$m" http)" --raft "127.0.0.1:$(port "$m" raft)" \
		--gossip "127.0.0.1:$(port "$m" gossip)" --data "$dir/data/$m" \
		--peers "$peers" --join "$manager_gossip" $(secflags "$m")
}

start_worker() { # start_worker <w>
	local w=$1
	# shellcheck disable=SC2046
	start "$w" worker --name "$w" --fast \
		--http "127.0.0.1:$(port "$w" http)" --gossip "127.0.0.1:$(port "$w" gossip)" \
		--data "$dir/data/$w" --join "$manager_gossip" $(secflags "$w")
}

# wait_ready waits until a leader is elected and every worker is alive.
wait_ready() {
	local deadline=$((SECONDS + ${CUBE_CLUSTER_WAIT:-60}))
	while ((SECONDS < deadline)); do
		local leader="" alive=0 m
		for m in "${managers[@]}"; do
			running "$m" || continue
			local api=127.0.0.1:$(port "$m" http)
			leader=$(curl_api "$api/cluster" 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin).get("Leader",""))' 2>/dev/null || true)
			[[ -n $leader ]] || continue
			alive=$(curl_api "$leader/nodes" 2>/dev/null | python3 -c 'import json,sys; print(sum(1 for n in json.load(sys.stdin) if n["State"]=="alive"))' 2>/dev/null || echo 0)
			break
		done
		if [[ -n $leader && $alive -ge ${#workers[@]} ]]; then
			echo "leader: $leader; workers alive: $alive"
			return 0
		fi
		sleep 0.2
	done
	echo "cluster did not become ready in time; last log lines:" >&2
	for n in "${managers[@]}" "${workers[@]}"; do
		echo "--- $n" >&2
		tail -n 5 "$dir/logs/$n.log" >&2 || true
	done
	return 1
}

status() {
	printf '%-4s %-8s %-22s %s\n' NODE STATE HTTP LOG
	for n in "${managers[@]}" "${workers[@]}"; do
		local state=stopped
		running "$n" && state=running
		printf '%-4s %-8s %-22s %s\n' "$n" "$state" "127.0.0.1:$(port "$n" http)" "$dir/logs/$n.log"
	done
}

up() {
	[[ -x $bin ]] || {
		echo "no $bin: run make build" >&2
		exit 1
	}
	credentials
	for m in "${managers[@]}"; do start_manager "$m"; done
	for w in "${workers[@]}"; do start_worker "$w"; done
	wait_ready
	status
	cat <<TXT

Managers: https://127.0.0.1:5556, :5566, :5576 (any of them answers; writes go to the leader)
Page:     https://127.0.0.1:5556/ui/ (token: $dir/operator.token; CA: $tlsdir/cube-ca.pem)
Secure:   mutual TLS, a gossip key and an operator token, all in $dir (env, tls/, operator.token)
Try:      bin/cube run -f examples/task1.json      bin/cube status      bin/cube node
curl:     source $dir/env; curl --cacert "\$CUBE_CACERT" -H "X-Cube-Token: \$CUBE_TOKEN" \$(echo \$CUBE_MANAGERS | cut -d, -f1)/tasks
Stop:     make cluster-down
TXT
}

down() {
	for n in "${workers[@]}" "${managers[@]}"; do
		local pidfile=$dir/run/$n.pid
		[[ -f $pidfile ]] || continue
		local pid
		pid=$(cat "$pidfile")
		if kill -0 "$pid" 2>/dev/null; then
			kill -TERM "$pid" 2>/dev/null || true
			for _ in $(seq 50); do
				kill -0 "$pid" 2>/dev/null || break
				sleep 0.1
			done
			kill -KILL "$pid" 2>/dev/null || true
		fi
		rm -f "$pidfile"
	done
	for w in "${workers[@]}"; do
		ids=$(docker ps -aq --filter "label=cube.worker=$w" 2>/dev/null || true)
		[[ -n $ids ]] && docker rm -f $ids >/dev/null
	done
	rm -rf "$dir/data" "$dir/run"
	echo "cluster stopped; task containers removed; logs kept in $dir/logs"
}

case ${1:-} in
up) up ;;
down) down ;;
status) status ;;
*)
	echo "usage: $0 up|down|status" >&2
	exit 2
	;;
esac
