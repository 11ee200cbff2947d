#!/usr/bin/env bash
# failover.sh measures leader failover on a running `make cluster`: it
# SIGKILLs the leader, times until the next write (POST /tasks, 201) is
# accepted by a surviving manager, restarts the killed manager, waits for the
# cluster to be whole again, and repeats. It prints every trial, then the
# median and the max.
#
#   scripts/failover.sh [trials]     (default 10)
set -euo pipefail
cd "$(dirname "$0")/.."
trials=${1:-10}
dir=${CUBE_CLUSTER_DIR:-$PWD/.cluster}
managers=(127.0.0.1:5556 127.0.0.1:5566 127.0.0.1:5576)

now_ms() { date +%s%3N; }

leader() {
	for m in "${managers[@]}"; do
		l=$(curl -sf -m 1 "http://$m/cluster" 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin).get("Leader",""))' 2>/dev/null || true)
		[[ -n $l ]] && {
			echo "$l"
			return
		}
	done
}

results=()
for i in $(seq "$trials"); do
	l=$(leader)
	[[ -n $l ]] || {
		echo "no leader" >&2
		exit 1
	}
	case $l in
	*:5556) node=m1 ;; *:5566) node=m2 ;; *:5576) node=m3 ;;
	*)
		echo "unknown leader $l" >&2
		exit 1
		;;
	esac
	pid=$(cat "$dir/run/$node.pid")
	t0=$(now_ms)
	kill -9 "$pid"
	ok=""
	while [[ -z $ok ]]; do
		for m in "${managers[@]}"; do
			[[ $m == "$l" ]] && continue
			id=$(python3 -c 'import uuid; print(uuid.uuid4())')
			code=$(curl -s -o /dev/null -w '%{http_code}' -m 2 -X POST "http://$m/tasks" \
				-d "{\"State\":2,\"Task\":{\"ID\":\"$id\",\"Name\":\"failover-$i\",\"Image\":\"cube-echo:latest\"}}" || true)
			if [[ $code == 201 ]]; then
				ok=1
				break
			fi
		done
	done
	ms=$(($(now_ms) - t0))
	results+=("$ms")
	echo "trial $i: killed leader $node; next write accepted after ${ms} ms"
	scripts/cluster.sh up >/dev/null
done
printf '%s\n' "${results[@]}" | sort -n | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "failover over %d trials: median %s ms, max %s ms\n", NR, m, a[NR]}'
