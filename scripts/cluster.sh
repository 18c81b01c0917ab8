#!/usr/bin/env bash
# `make cluster`: three NATS servers (JetStream, R3, sync_interval always) and
# three ledger nodes on loopback, data under $CLUSTER_DIR (default
# ./cluster-data, kept between runs). Prints the addresses and the admin
# token; Ctrl-C stops them all.
set -euo pipefail
NATS=${NATS_SERVER:-.venv/bin/nats-server}
LEDGER=${LEDGER:-target/release/ledger}
DIR=${CLUSTER_DIR:-cluster-data}
[ -x "$NATS" ] || { echo "no nats-server at $NATS: run 'make nats' first" >&2; exit 2; }
[ -x "$LEDGER" ] || { echo "no ledger at $LEDGER: run 'make build' first" >&2; exit 2; }
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
pids=()
stop() { trap - EXIT INT TERM; kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap stop EXIT INT TERM

for i in 1 2 3; do
  cat > "$DIR/nats-$i.conf" <<CONF
server_name: nats-$i
listen: 127.0.0.1:$((4221 + i))
jetstream { store_dir: "$DIR/nats-$i", sync_interval: always }
cluster {
  name: ledger
  listen: 127.0.0.1:$((6221 + i))
  routes: [nats-route://127.0.0.1:6222, nats-route://127.0.0.1:6223, nats-route://127.0.0.1:6224]
}
CONF
  "$NATS" -c "$DIR/nats-$i.conf" >"$DIR/nats-$i.log" 2>&1 &
  pids+=($!)
done

[ -s "$DIR/admin.secret" ] || head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$DIR/admin.secret"
SECRET=$(cat "$DIR/admin.secret")
for i in 1 2 3; do
  cat > "$DIR/node-$i.toml" <<CONF
[server]
data_dir = "$DIR/node-$i"
listen = "127.0.0.1:$((8080 + i))"

[[token]]
name = "admin"
secret = "$SECRET"
tenants = ["*"]
role = "admin"

[cluster]
nats = ["nats://127.0.0.1:4222", "nats://127.0.0.1:4223", "nats://127.0.0.1:4224"]
node = "n$i"
advertise = "http://127.0.0.1:$((8080 + i))"
partitions = 8
replicas = 3
lease_secs = 5
CONF
  RUST_LOG=${RUST_LOG:-info} "$LEDGER" serve --config "$DIR/node-$i.toml" >"$DIR/node-$i.log" 2>&1 &
  pids+=($!)
done

for i in 1 2 3; do
  for _ in $(seq 1 100); do
    curl -fsS "http://127.0.0.1:$((8080 + i))/readyz" >/dev/null 2>&1 && break
    sleep 0.2
  done
done
echo "NATS:   nats://127.0.0.1:4222 nats://127.0.0.1:4223 nats://127.0.0.1:4224 (logs: $DIR/nats-*.log)"
echo "ledger: http://127.0.0.1:8081 (n1) http://127.0.0.1:8082 (n2) http://127.0.0.1:8083 (n3) (logs: $DIR/node-*.log)"
echo "admin token: $SECRET"
echo "try:    curl -s -H \"Authorization: Bearer $SECRET\" http://127.0.0.1:8081/cluster"
echo "Ctrl-C stops them all."
# Kill a node to watch a failover; the rest keep running until Ctrl-C.
wait
