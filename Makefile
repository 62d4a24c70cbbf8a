# icebox — the two commands are `make run` and `make test`.
GO      ?= go
TAGS    ?= goolm
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
BIN     := bin/icebox

# `make run` listens on loopback only, with state in ./data and a generated
# secret; the built-in defaults (icebox config defaults) listen on 0.0.0.0.
RUN_ENV := ICEBOX_STATE_DIR=./data \
	ICEBOX_TURN_LISTEN_UDP=127.0.0.1:3478 \
	ICEBOX_TURN_LISTEN_TCP=127.0.0.1:3478 \
	ICEBOX_TURN_RELAY_BIND_IP=127.0.0.1 \
	ICEBOX_HTTP_LISTEN=127.0.0.1:8080

.PHONY: build run test test-deps bench lint fuzz clean

build:
	CGO_ENABLED=0 $(GO) build -tags $(TAGS) -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/icebox

run: build
	$(RUN_ENV) ./$(BIN) serve $(ARGS)

# test-deps installs the real peers the tests use when they are missing:
# Debian's coturn (turnutils_uclient/turnutils_peer) and systemd
# (systemd-analyze), and a pinned Dendrite homeserver built with go install.
test-deps:
	@./scripts/install-test-deps.sh
	@./scripts/install-dendrite.sh

test: test-deps
	$(GO) vet -tags $(TAGS) ./...
	$(GO) test -tags $(TAGS) -race -count=1 -timeout 20m ./...

# bench runs the Go micro-benchmarks, then (as root) icebox against coturn
# side by side in network namespaces: bench/run.sh, report in bench/results/.
# BENCH_QUICK=1 for a short smoke run, BENCH_ROUNDS=N for more rounds.
bench: build
	$(GO) test -tags $(TAGS) -run '^$$' -bench . -benchmem ./...
	GO=$(GO) TAGS=$(TAGS) ./bench/run.sh

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet -tags $(TAGS) ./...

fuzz:
	$(GO) test -run '^$$' -fuzz FuzzParseUsername -fuzztime 30s ./credentials/
	$(GO) test -run '^$$' -fuzz FuzzPolicy -fuzztime 30s ./turnserver/

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
