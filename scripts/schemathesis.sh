#!/usr/bin/env bash
# `make schemathesis`: schemathesis against a real `ledger serve` on a temporary
# directory, with an admin token and then a client token (both in one config
# file), every check on, EXAMPLES examples per operation. Fails on any server
# error or any answer the OpenAPI document does not describe.
set -euo pipefail
ledger=${1:?usage: schemathesis.sh LEDGER [EXAMPLES]}
examples=${2:-50}
st=${SCHEMATHESIS:-.venv-api/bin/schemathesis}
dir=$(mktemp -d)
port=$((20000 + RANDOM % 20000))
cleanup() {
  [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  rm -rf "$dir"
}
trap cleanup EXIT
cat > "$dir/ledger.toml" <<TOML
[[token]]
name = "schemathesis-admin"
secret = "admin-7Qm2Vx9Lp4Rt8Kz3"
tenants = ["*"]
role = "admin"

[[token]]
name = "schemathesis-client"
secret = "client-5Hn8Wc2Jd6Fs1Yb9"
tenants = ["*"]
role = "client"
TOML
"$ledger" serve --config "$dir/ledger.toml" --data "$dir/data" --listen "127.0.0.1:$port" > "$dir/server.log" 2>&1 &
pid=$!
for _ in $(seq 100); do
  curl -fs "http://127.0.0.1:$port/readyz" > /dev/null && break
  sleep 0.1
done
status=0
for secret in admin-7Qm2Vx9Lp4Rt8Kz3 client-5Hn8Wc2Jd6Fs1Yb9; do
  echo "== schemathesis with the ${secret%%-*} token"
  "$st" --config-file scripts/schemathesis.toml run "http://127.0.0.1:$port/openapi.json" \
    --checks all --max-examples "$examples" --workers 1 --seed 1 \
    --header "Authorization: Bearer $secret" \
    --exclude-path-regex '/stream$' \
    --suppress-health-check all || status=1
done
if ! kill -0 "$pid" 2>/dev/null; then
  echo "the server died:"; cat "$dir/server.log"; exit 1
fi
if grep -q "panicked" "$dir/server.log"; then
  echo "the server panicked:"; grep -A5 panicked "$dir/server.log"; status=1
fi
exit $status
