# The two commands a new user needs: `make demo` and `make test`.
# Every target runs scripts/setup.sh first (idempotent, seconds when done).
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
export PATH := $(HOME)/.cargo/bin:$(PATH)
CARGO ?= cargo

.PHONY: all setup build static deb kernel-matrix demo test lint bench clean

# `make`: the host binary, and static binaries for amd64 and arm64 routers.
all: build static

setup:
	@bash scripts/setup.sh

build: setup
	$(CARGO) build --release --locked -p pf-sidecar --bin pf-sidecar

# Static pf-sidecar (musl, XDP object embedded) for amd64 and arm64, plus
# the datapath test binaries the kernel matrix runs in its guests:
# target/kernel-matrix/bin/pf-sidecar-{amd64,arm64}.
static: setup
	bash scripts/kernel-matrix/build.sh

# Debian packages for amd64 and arm64 (cargo-deb): target/package/*.deb
deb: static
	bash scripts/package/build.sh amd64
	bash scripts/package/build.sh arm64

# Debian's stock kernels (5.10, 6.1, 6.12, newest; amd64 and arm64) under qemu.
kernel-matrix: static
	bash scripts/kernel-matrix/fetch.sh
	PF_REQUIRE_ROOT=1 $(CARGO) test --locked -p integration-tests --test kernel_matrix
	@cat target/kernel-matrix/matrix.txt

demo: build
	bash scripts/demo.sh

# Every test: unit tests, the ELF scan, the root tests that load the
# programs and drive namespaces, and the kernel matrix (its guests run the
# static binaries). Root tests fail (not skip) without root here.
#
# The FRR matrix: the whole suite runs on the host's FRR (Debian 12's 8.4),
# and the FRR tests run again on Debian's FRR 10.3 (trixie) and the newest
# (sid), from the chroots setup.sh prepares.
FRR_MATRIX ?= trixie sid
FRR_MATRIX_TESTS ?= --test daemon_frr --test rfc5549_inline --test frr_offload --test suppress_fib_pending
test: setup lint static
	mkdir -p target
	status=0; \
	PF_REQUIRE_ROOT=1 $(CARGO) test --workspace --locked --no-fail-fast 2>&1 | tee target/test.log || status=1; \
	for suite in $(FRR_MATRIX); do \
	  echo "==> FRR matrix: the FRR tests on $$suite's FRR ($$(cat /var/cache/pf-sidecar/frr/$$suite/.frr-version))" | tee -a target/test.log; \
	  PF_FRR=$$suite PF_REQUIRE_ROOT=1 $(CARGO) test --locked --no-fail-fast -p pf-sidecar $(FRR_MATRIX_TESTS) 2>&1 | tee -a target/test.log || status=1; \
	done; \
	echo "==> Debian packages: build (amd64, arm64), install amd64 into a clean Debian 12 chroot, use it, lintian both" | tee -a target/test.log; \
	if bash scripts/package/build.sh amd64 > target/package-test.log 2>&1 \
	  && bash scripts/package/build.sh arm64 >> target/package-test.log 2>&1 \
	  && bash scripts/package/test.sh >> target/package-test.log 2>&1; then \
	  tail -1 target/package-test.log | tee -a target/test.log; \
	  echo "test result: ok. 1 passed; 0 failed; 0 ignored (Debian package)" | tee -a target/test.log; \
	else \
	  tail -30 target/package-test.log | tee -a target/test.log; \
	  echo "test result: FAILED. 0 passed; 1 failed; 0 ignored (Debian package)" | tee -a target/test.log; \
	  status=1; \
	fi; \
	cat target/kernel-matrix/matrix.txt 2>/dev/null || true; \
	scripts/test-summary.sh target/test.log && exit $$status

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
