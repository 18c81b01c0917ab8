# The two commands of README: `make run` serves on ./data, `make test` passes the tests.
CARGO ?= cargo

.PHONY: run test check bench bench-pg build torture

run:
	$(CARGO) run --release --locked --bin ledger -- serve

test:
	$(CARGO) test --locked

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

# The crash loop: the release server SIGKILLed under 16 clients CYCLES times,
# every acknowledged command checked after each restart (examples/torture.rs).
CYCLES ?= 25
torture:
	$(CARGO) build --release --locked --bin ledger --example torture
	target/release/examples/torture --ledger target/release/ledger --cycles $(CYCLES)
