# icebox — the two commands are `make run` and `make test`.
SHELL   := /bin/bash
GO      ?= go
TAGS    ?= goolm
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
BIN     := bin/icebox

# `make run` listens on loopback only, with state in ./data and a generated
# secret; the built-in defaults (icebox config defaults) listen on 0.0.0.0.
# ICEBOX_* variables in the environment win over these (${VAR-default}: a
# variable set empty stays empty, as ICEBOX_TURN_LISTEN_TCP= turns TCP off).
RUN_ENV := ICEBOX_STATE_DIR="$${ICEBOX_STATE_DIR-./data}" \
	ICEBOX_TURN_LISTEN_UDP="$${ICEBOX_TURN_LISTEN_UDP-127.0.0.1:3478}" \
	ICEBOX_TURN_LISTEN_TCP="$${ICEBOX_TURN_LISTEN_TCP-127.0.0.1:3478}" \
	ICEBOX_TURN_RELAY_BIND_IP="$${ICEBOX_TURN_RELAY_BIND_IP-127.0.0.1}" \
	ICEBOX_HTTP_LISTEN="$${ICEBOX_HTTP_LISTEN-127.0.0.1:8080}"

.PHONY: build cross run test test-deps bench lint fuzz security clean man

build:
	CGO_ENABLED=0 $(GO) build -tags $(TAGS) -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/icebox

# man writes the man pages of every command into docs/man (committed;
# cmd/icebox's TestManPagesCurrent fails when they are stale). Install them
# with: install -m 644 docs/man/*.1 /usr/local/share/man/man1/
man: build
	rm -f docs/man/*.1
	./$(BIN) man --dir docs/man

# cross builds the whole module for macOS, FreeBSD and Windows, where the
# relay runs on its portable engine (see README). The Linux-only harnesses
# (bench, internal/netbed: network namespaces) are left out by their build
# tags.
cross:
	@set -e; for os in darwin freebsd windows; do \
		echo "cross: GOOS=$$os"; \
		CGO_ENABLED=0 GOOS=$$os $(GO) build -tags $(TAGS) ./...; \
	done

run: build
	$(RUN_ENV) exec ./$(BIN) serve $(ARGS)

# test-deps installs the real peers the tests use when they are missing:
# Debian's coturn (turnutils_uclient/turnutils_peer) and systemd
# (systemd-analyze), and a pinned Dendrite homeserver and livekit-server (the
# LiveKit SFU of the MatrixRTC tests and managed mode), built with go install.
test-deps:
	@./scripts/install-test-deps.sh
	@./scripts/install-dendrite.sh
	@./scripts/install-livekit.sh
	@./scripts/install-pebble.sh # the ACME CA of the certificate tests
	@./scripts/install-postgresql.sh # the store's PostgreSQL driver tests (their own cluster)

test: test-deps
	$(GO) vet -tags $(TAGS) ./...
	$(GO) test -tags $(TAGS) -race -count=1 -timeout 20m ./...
	# The portable relay engine (other systems' engine), selected on Linux.
	$(GO) test -tags '$(TAGS) icebox_portable' -race -count=1 -timeout 10m ./turnserver/...

# bench runs the Go micro-benchmarks, then (as root) icebox against coturn
# side by side in network namespaces, then calls through the API on 1 and 3
# nodes (bench/cluster.sh): bench/run.sh, reports in bench/results/.
# BENCH_QUICK=1 for a short smoke run, BENCH_ROUNDS=N for more rounds.
bench: build
	$(GO) test -tags $(TAGS) -run '^$$' -bench . -benchmem ./...
	GO=$(GO) TAGS=$(TAGS) ./bench/run.sh

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet -tags $(TAGS) ./...
	@./scripts/fuzz-targets.sh check $(FUZZ_TARGETS)

# fuzz runs every fuzz target for FUZZTIME each (go test -fuzz takes one
# target per run, so they are listed here; scripts/fuzz-targets.sh finds them
# and fails if one is missing from this list).
FUZZTIME ?= 30s
FUZZ_TARGETS := \
	./credentials/:FuzzParseUsername \
	./probe/:FuzzParseURL \
	./turnserver/:FuzzPolicy \
	./signaling/matrix/:FuzzParseCallContent \
	./signaling/matrix/:FuzzParseNegotiateAndMedia \
	./signaling/matrix/:FuzzParseRTCEvent \
	./signaling/matrix/:FuzzParseRTCKey \
	./signaling/httpapi/:FuzzAuthenticate \
	./signaling/httpapi/:FuzzDecodeJSON \
	./signaling/httpapi/:FuzzWSParseCommand \
	./signaling/matrixrtc/authservice/:FuzzRequestBody \
	./signaling/matrixrtc/livekitproc/:FuzzWebhook \
	./signaling/matrixrtc/framecrypt/:FuzzDecrypt
fuzz:
	@./scripts/fuzz-targets.sh check $(FUZZ_TARGETS)
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; fn=$${t##*:}; \
		echo "fuzz $$pkg $$fn ($(FUZZTIME))"; \
		$(GO) test -tags $(TAGS) -run '^$$' -fuzz "^$$fn$$" -fuzztime $(FUZZTIME) $$pkg; \
	done

# security runs the attack regression tests (TestSecurity*: Connect over UDP,
# the host's other addresses, peer forms of the Enable Security checklist,
# reflection per /64, metric labels, listing and fan-out bounds, state-file
# loss) verbosely, so the figures they log — bystander loss, amplification,
# series counts, bytes — are printed. Namespace tests need root.
security: test-deps
	@mkdir -p bin
	set -o pipefail; $(GO) test -tags $(TAGS) -race -count=1 -timeout 20m -v -run 'Security' ./... 2>&1 \
		| tee bin/security.log

clean:
	rm -rf bin

# install copies bin/icebox, the systemd unit, the sysusers entry and (if
# none exists) the example configuration into place; it does not rebuild, so
# run `make build` first as yourself, then `sudo make install`. DESTDIR
# stages everything under another root for packaging. See docs/deploy.md.
PREFIX  ?= /usr/local
DESTDIR ?=

.PHONY: install
install:
	DESTDIR='$(DESTDIR)' PREFIX='$(PREFIX)' BIN='$(BIN)' ./scripts/install.sh

# The kernel path's eBPF object (turnserver/internal/kernelpath) is generated
# from bpf/relay.c by bpf2go and committed, so building icebox needs no
# clang. `make bpf` regenerates it (apt-get install clang llvm libbpf-dev);
# `make bpf-check` regenerates and fails on a difference (skipped without
# clang, or with another clang major than the committed object's).
.PHONY: bpf bpf-check
bpf:
	cd turnserver/internal/kernelpath && $(GO) generate ./
bpf-check:
	@GO=$(GO) ./scripts/bpf-check.sh
