# The two commands of README: `make run` serves on ./data, `make test` passes the tests.
CARGO ?= cargo

.PHONY: run test check bench build

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
