# Thin wrappers over the go tool. `make run` is the demo; `make test` is
# everything CI runs.
GO       ?= go
BIN      ?= bin/sidekey
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT   ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
LDFLAGS  := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)
# grpcnotrace leaves out grpc's x/net/trace debug pages, which sidekey never
# serves; they pull in html/template, which keeps every exported method of
# every type in the binary: a quarter of its size and 3 MiB of resident memory.
TAGS     := grpcnotrace
# Fuzz budgets are counts, not durations: with go1.26 a duration can end in a
# spurious "context deadline exceeded" from the coordinator itself
# (go.dev/issue/75804, fixed in go1.27), and a minimization may take the whole
# window. A count only ever slows down on a busy machine.
FUZZTIME ?= 50000x
FUZZMINIMIZE ?= 5000x
FUZZTIME_SMALL ?= 20000x

.PHONY: build run test unit e2e fuzz lint scan bench bench-go bench-smoke clean

# The same static build as the Dockerfile.
build:
	CGO_ENABLED=0 $(GO) build -trimpath -tags '$(TAGS)' -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/sidekey

run: build
	./$(BIN) demo

test: lint unit fuzz bench-smoke e2e

unit:
	$(GO) test -race -shuffle=on -count=1 ./...

# The end-to-end suite drives the real binary over loopback. The Vault
# package runs a real Vault core in-process; its module is large, so it is
# built without the race detector (the binary under test never has it).
e2e: build
	bash e2e/deps.sh
	cd e2e && SIDEKEY_E2E_BIN=$(abspath $(BIN)) $(GO) test -race -count=1 -timeout 15m . ./acme/
	cd e2e && SIDEKEY_E2E_BIN=$(abspath $(BIN)) $(GO) test -count=1 -timeout 15m ./vault/

fuzz:
	$(GO) test -run='^$$' -fuzz='^FuzzParse$$' -fuzztime=$(FUZZTIME) -fuzzminimizetime=$(FUZZMINIMIZE) ./config/
	$(GO) test -run='^$$' -fuzz='^FuzzRouter$$' -fuzztime=$(FUZZTIME) -fuzzminimizetime=$(FUZZMINIMIZE) ./proxy/
	$(GO) test -run='^$$' -fuzz='^FuzzJSONFormatterMatchesLogrus$$' -fuzztime=$(FUZZTIME) -fuzzminimizetime=$(FUZZMINIMIZE) ./telemetry/
	@# The parsers of what a client sends: paths, hosts, caller tokens, CONNECT targets, tunnel patterns.
	for f in FuzzCanonicalPath FuzzParseHostIP FuzzCallerHeaders FuzzParseTarget FuzzTunnelPattern; do \
		$(GO) test -run='^$$' -fuzz="^$$f\$$" -fuzztime=$(FUZZTIME_SMALL) -fuzzminimizetime=$(FUZZMINIMIZE) ./proxy/ || exit 1; \
	done
	$(GO) test -run='^$$' -fuzz='^FuzzCanonicalHost$$' -fuzztime=$(FUZZTIME_SMALL) -fuzzminimizetime=$(FUZZMINIMIZE) ./certs/
	$(GO) test -run='^$$' -fuzz='^FuzzParseRawDiff$$' -fuzztime=$(FUZZTIME_SMALL) -fuzzminimizetime=$(FUZZMINIMIZE) ./cmd/sidekey/
	$(GO) test -run='^$$' -fuzz='^FuzzReadSSE$$' -fuzztime=$(FUZZTIME_SMALL) -fuzzminimizetime=$(FUZZMINIMIZE) ./cmd/sidekey/

lint: scan
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo 'gofmt: files above need formatting'; exit 1; }
	$(GO) vet ./...
	cd e2e && $(GO) vet ./...

# The repository holds no credential-shaped string but on lines marked
# sidekey:allow-secret.
scan: build
	./$(BIN) scan .

# sidekey beside nginx, HAProxy, Caddy, a bare fasthttp proxy and net/http,
# on one upstream, in one run; writes bench/RESULTS.md. Installs the peers
# and wrk from Debian packages when missing. BENCHFLAGS selects a subset,
# e.g. BENCHFLAGS="-duration 3s -repeats 1 -conns 32".
bench:
	bash bench/run.sh $(BENCHFLAGS)

# Go benchmarks of the hot path (ns/op, allocs/op); CI runs each once so
# they keep working, and nothing in `make test` depends on the machine's speed.
bench-go:
	$(GO) test -run='^$$' -bench=. -benchmem ./...

bench-smoke:
	$(GO) test -run='^$$' -bench=. -benchtime=1x ./...

clean:
	rm -rf bin
