#!/usr/bin/env bash
# machine-credentials.sh makes the identity of the Cube machines (the
# Vagrantfile's and make drill's) in bin/machine, once: a CA, a certificate
# for every machine of deploy/machine/machines.json (its name, its address on
# the machine network), a client certificate "operator", a gossip key and an
# operator token; and bin/machine/env, the client settings of DESIGN §6 for
# the machines (source it, or CUBE_ENV_FILE=bin/machine/env bin/cube status).
#
# Each machine's boot.sh copies only its own certificate and key, the CA
# certificate (never its key), the gossip key and, on managers, the token.
# Delete bin/machine/tls to make a new identity (then recreate the machines).
set -euo pipefail
cd "$(dirname "$0")/.."
cube=${1:-bin/machine/cube}
out=bin/machine
spec=deploy/machine/machines.json
mkdir -p "$out/tls"
chmod 700 "$out/tls"
[[ -f $out/tls/cube-ca.pem ]] || "$cube" tls ca create --dir "$out/tls" --name "Cube machines CA" >/dev/null
subnet=$(sed -n 's/.*"subnet": *"\([^"]*\)".*/\1/p' "$spec")
managers=()
while read -r name role host; do
	[[ -f $out/tls/$role-$name.pem ]] || "$cube" tls cert create "--$role" --name "$name" --dir "$out/tls" \
		--host "$subnet.$host,$name,127.0.0.1,localhost" >/dev/null
	[[ $role == manager ]] && managers+=("https://$subnet.$host:5556")
done < <(python3 -c 'import json,sys; [print(m["name"], m["role"], m["host"]) for m in json.load(open(sys.argv[1]))["machines"]]' "$spec")
[[ -f $out/tls/client-operator.pem ]] || "$cube" tls cert create --client --name operator --dir "$out/tls" >/dev/null
[[ -f $out/gossip.key ]] || (umask 077 && "$cube" keygen >"$out/gossip.key")
[[ -f $out/operator.token ]] || (umask 077 && "$cube" keygen --token >"$out/operator.token")
abs=$(cd "$out" && pwd)
(
	umask 077
	cat >"$out/env" <<ENV
# Cube client settings for the machines (make machine-files writes this file).
export CUBE_MANAGERS=$(IFS=,; echo "${managers[*]}")
export CUBE_TOKEN=$(cat "$out/operator.token")
export CUBE_CACERT=$abs/tls/cube-ca.pem
export CUBE_CLIENT_CERT=$abs/tls/client-operator.pem
export CUBE_CLIENT_KEY=$abs/tls/client-operator-key.pem
ENV
)
echo "machine-credentials: $out/tls, $out/gossip.key, $out/operator.token, $out/env"
