# berth: build, run and test on a Debian 12 machine, as root.
# Every target installs the Debian packages it needs, so a fresh machine needs nothing else.

SHELL := /bin/bash
export PATH := $(HOME)/.cargo/bin:$(PATH)
CARGO ?= cargo

# What berth itself needs on a node, and what building it needs (the pause program is C,
# linked statically).
RUNTIME_PACKAGES := runc containernetworking-plugins iptables iproute2 ca-certificates \
  gcc libc6-dev
# What the test suite adds: busybox for test images, Go with grpc-go, spdystream and
# gorilla/websocket for the clients we did not write (tests/go), a real registry (with
# htpasswd and TLS), skopeo, containerd (the benchmark's baseline) and curl (its floor).
TEST_PACKAGES := busybox-static golang-go golang-google-grpc-dev golang-google-protobuf-dev \
  golang-github-docker-spdystream-dev golang-github-gorilla-websocket-dev \
  docker-registry apache2-utils skopeo openssl containerd curl

.PHONY: all build run install test deps test-deps youki fmt-check clippy unit bench fuzz soak clean

all: build

# Installs whatever of the named packages is missing; apt-get update only when needed.
define apt_install
	@missing=$$(for p in $(1); do \
	    dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; \
	  done); \
	if [ -n "$$missing" ]; then \
	  echo "installing: $$missing"; \
	  apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi
endef

deps:
	$(call apt_install,$(RUNTIME_PACKAGES))

test-deps: deps youki
	$(call apt_install,$(TEST_PACKAGES))

# youki, the second OCI runtime handler ([runtime.handlers.youki]): a pinned release from
# crates.io, with cgroup v1 (this kind of host) and v2 and seccomp (libseccomp); skipped
# when that version is installed.
YOUKI_VERSION := 0.7.0
youki:
	$(call apt_install,libseccomp-dev pkg-config)
	@command -v youki >/dev/null && youki --version | grep -q '$(YOUKI_VERSION)' \
	  || $(CARGO) install youki --version $(YOUKI_VERSION) --locked --features v1,v2,seccomp

build:
	$(CARGO) build --release --locked

# Installs berth on this node (DESTDIR for packagers): the binary, the systemd unit, the
# default config and crictl's config, the last two only where none is there yet.
PREFIX ?= /usr/local
BERTH_BINARY ?= target/release/berth
install: build
	install -D -m 0755 $(BERTH_BINARY) $(DESTDIR)$(PREFIX)/bin/berth
	install -d $(DESTDIR)/etc/systemd/system $(DESTDIR)/etc/berth
	sed 's|/usr/local/bin/berth|$(PREFIX)/bin/berth|' contrib/berth.service \
	  > $(DESTDIR)/etc/systemd/system/berth.service
	test -e $(DESTDIR)/etc/berth/berth.toml \
	  || $(BERTH_BINARY) config default > $(DESTDIR)/etc/berth/berth.toml
	test -e $(DESTDIR)/etc/crictl.yaml \
	  || install -m 0644 crictl-config/crictl.yaml $(DESTDIR)/etc/crictl.yaml

# Starts berth with the defaults: socket /run/berth/berth.sock, root /var/lib/berth.
run: deps build
	./target/release/berth serve

# The container monitor (monitor/) is a crate of its own: linted and checked apart.
fmt-check:
	$(CARGO) fmt --all -- --check
	cd monitor && $(CARGO) fmt -- --check
	cd fuzz && $(CARGO) fmt -- --check

# No production function past 80 lines of code (clippy.toml); tests are not held to it.
clippy:
	$(CARGO) clippy --locked --all-targets -- -D warnings
	$(CARGO) clippy --locked --lib --bins -- -D warnings -D clippy::too_many_lines
	cd monitor && $(CARGO) clippy --locked --release -- -D warnings -D clippy::too_many_lines

# The whole suite: formatting, lints, unit and integration tests, the monitor crate's
# unit tests; then the suites of the container paths again with youki as the default
# handler.
YOUKI_SUITES := --test containers --test exec --test mounts --test sandboxes --test stats \
  --test streaming --test spdy
test: test-deps fmt-check clippy
	$(CARGO) test --locked --all-targets
	cd monitor && $(CARGO) test --locked
	BERTH_TEST_RUNTIME=youki $(CARGO) test --locked $(YOUKI_SUITES)

# The pod-path benchmark against containerd and the floor (benches/pods/); as root.
bench: test-deps
	$(CARGO) bench --locked --bench pods

# 1 000 pod cycles and 1 000 ExecSync calls on the release build (benches/soak.rs); as root.
soak: test-deps
	$(CARGO) build --release --locked
	BERTH_TEST_BINARY=$(CURDIR)/target/release/berth $(CARGO) bench --locked --bench soak

# Every parser of bytes from outside the process under libFuzzer (fuzz/): FUZZ_SECONDS
# each (default 600), FUZZ_TARGETS to pick some. Needs the nightly toolchain (rustup's).
CARGO_FUZZ_VERSION := 0.13.2
fuzz:
	@command -v cargo-fuzz >/dev/null && cargo fuzz --version | grep -q '$(CARGO_FUZZ_VERSION)' \
	  || $(CARGO) install cargo-fuzz --version $(CARGO_FUZZ_VERSION) --locked
	./fuzz/run

clean:
	$(CARGO) clean
