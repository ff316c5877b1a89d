# The two commands a new user needs: `make demo` and `make test`.
# Every target runs scripts/setup.sh first (idempotent, seconds when done).
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
export PATH := $(HOME)/.cargo/bin:$(PATH)
CARGO ?= cargo

.PHONY: setup build demo test lint bench clean

setup:
	@bash scripts/setup.sh

build: setup
	$(CARGO) build --release --locked -p pf-sidecar --bin pf-sidecar

demo: build
	bash scripts/demo.sh

# Every test: unit tests, the ELF scan, and the root tests that load the
# programs and drive namespaces. Root tests fail (not skip) without root here.
test: setup lint
	mkdir -p target
	PF_REQUIRE_ROOT=1 $(CARGO) test --workspace --locked --no-fail-fast 2>&1 | tee target/test.log
	@scripts/test-summary.sh target/test.log

lint: setup
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings
	cd ebpf && rustup run nightly cargo fmt --check
	cd ebpf && rustup run nightly cargo clippy --release --locked --target-dir ../target/ebpf-clippy -- -D warnings
	# The fuzz targets build against the library's traits: keep them compiling.
	cd fuzz && $(CARGO) check --locked --bins

bench: setup
	$(CARGO) build --release --locked -p pf-sidecar -p integration-tests --bins
	./target/release/datapath-bench
	./target/release/fpm-bench
	./target/release/stages-bench
	./target/release/throughput-bench
	./target/release/frr-table-bench

clean:
	$(CARGO) clean
