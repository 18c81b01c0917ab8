#!/usr/bin/env bash
# `make bench-pg`: the ledger next to the booking server users would otherwise
# write, on PostgreSQL (benches/pg/server.rs, its own package: benches/pg/Cargo.toml
# and Cargo.lock, built into benches/pg/target), driven in one run by the same load
# generator (benches/http.rs: same client, connections, slot spread and hot slots).
#
# Installs PostgreSQL with apt if no /usr/lib/postgresql/*/bin has initdb and pg_ctl,
# creates a cluster in a temporary directory (owned by the `postgres` user when run
# as root: postgres refuses to run as root), starts it on a loopback port with its
# default settings (synchronous_commit = on), creates the table
# (benches/pg/schema.sql), starts the PostgreSQL server and runs the bench against
# it and the ledger. On the way out, failure or not, it stops the server and
# PostgreSQL and deletes the directory. PG_PORT chooses PostgreSQL's port.
set -euo pipefail
cd "$(dirname "$0")/../.."
CARGO=${CARGO:-cargo}

# The newest PostgreSQL installed, as its bin directory.
pg_bin() {
    local dir
    for dir in $(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V -r); do
        if [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then
            echo "$dir"
            return 0
        fi
    done
    return 1
}

if ! bin=$(pg_bin); then
    [ "$(id -u)" = 0 ] || { echo "bench-pg: PostgreSQL is not installed; install it (apt-get install postgresql) or run as root" >&2; exit 1; }
    echo "bench-pg: installing PostgreSQL with apt (Debian's package also creates and may start its own 'main' cluster, not used here)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null
    bin=$(pg_bin) || { echo "bench-pg: no initdb/pg_ctl under /usr/lib/postgresql/*/bin after installing" >&2; exit 1; }
fi

# Everything PostgreSQL runs as a user other than root.
if [ "$(id -u)" = 0 ]; then
    id -u postgres >/dev/null 2>&1 || useradd --system --user-group --no-create-home --shell /usr/sbin/nologin postgres
    as_pg() { runuser -u postgres -- "$@"; }
else
    as_pg() { "$@"; }
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/bench-pg.XXXXXX")
server_pid=
cleanup() {
    local status=$?
    if [ -n "$server_pid" ]; then
        kill -TERM "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    if [ -f "$work/data/postmaster.pid" ]; then
        as_pg "$bin/pg_ctl" -D "$work/data" -m fast -w stop >/dev/null || echo "bench-pg: stopping PostgreSQL failed" >&2
    fi
    rm -rf "$work"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
if [ "$(id -u)" = 0 ]; then chown postgres: "$work"; fi

port=${PG_PORT:-$((20000 + RANDOM % 20000))}
echo "bench-pg: $("$bin/postgres" --version), cluster in $work, port $port"
as_pg "$bin/initdb" -D "$work/data" -U bench --auth=trust -E UTF8 >"$work/initdb.log" 2>&1 ||
    { cat "$work/initdb.log" >&2; exit 1; }
as_pg "$bin/pg_ctl" -D "$work/data" -l "$work/postgres.log" -w -t 60 \
    -o "-p $port -k $work -c listen_addresses=127.0.0.1" start >/dev/null ||
    { cat "$work/postgres.log" >&2; exit 1; }
"$bin/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U bench -d postgres -f benches/pg/schema.sql

"$CARGO" build --release --locked --features bench --bin ledger
"$CARGO" build --release --locked --manifest-path benches/pg/Cargo.toml
token="bench-pg-$$-$RANDOM$RANDOM"
benches/pg/target/release/pg_server --listen 127.0.0.1:0 --token "$token" \
    --database "host=127.0.0.1 port=$port user=bench dbname=postgres" >"$work/pg_server.log" 2>&1 &
server_pid=$!
url=
for _ in $(seq 300); do
    url=$(sed -n 's/^listening on //p' "$work/pg_server.log")
    [ -n "$url" ] && break
    kill -0 "$server_pid" 2>/dev/null || { cat "$work/pg_server.log" >&2; exit 1; }
    sleep 0.1
done
[ -n "$url" ] || { echo "bench-pg: the PostgreSQL server did not start within 30 s" >&2; cat "$work/pg_server.log" >&2; exit 1; }

"$CARGO" bench --locked --features bench --bench http -- \
    --ledger target/release/ledger --target "$url" --token "$token" --target-name postgres
