# Cube's Makefile. `make` alone lists the targets.
.DEFAULT_GOAL := help
SHELL := /bin/bash

GO        ?= go
BIN       := bin
ECHO_IMG  := cube-echo:latest
# What `cube version` prints: the tree's git describe and commit, set with
# -ldflags -X (a plain go build falls back on the Go toolchain's stamp).
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT    ?= $(shell git rev-parse HEAD 2>/dev/null)
LDVERSION := -X main.version=$(VERSION) -X main.commit=$(COMMIT)
# How much CI fuzzes each decoder, in executions (`make fuzz FUZZTIME=2000000x`
# for a longer run). A count, not a duration: Go 1.26's fuzz coordinator can fail
# a run with "context deadline exceeded" when a duration runs out while a worker
# is mid-call on a loaded machine (golang/go#75804, fixed in Go 1.27); a count
# has no deadline to race.
FUZZTIME  ?= 20000x

.PHONY: help build images test unit fuzz lint clean cluster cluster-down harness chaos machine-image machine-files drill drill-down

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

build: ## build bin/cube (its version and commit from git: bin/cube version)
	$(GO) build -ldflags '$(LDVERSION)' -o $(BIN)/cube ./cmd/cube

images: ## build the task images (cube-echo:latest) from source; fast when nothing changed
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags='-s -w' -o $(BIN)/echo ./cmd/echo
	scripts/build-image.sh $(BIN)/echo cmd/echo/Dockerfile $(ECHO_IMG)

test: images machine-files lint unit fuzz ## everything CI runs: images, lint, race-enabled tests on the real engine (a short drill on machines too), a short fuzz

# -p 1: one package at a time. The worker's and the cluster tests both drive
# the one Docker engine; run side by side on two cores they starved it (engine
# calls past 60 s, CI failures that were the machine's, not Cube's).
# The first line only compiles (every test binary, two at a time, running
# none of their tests): -p 1 compiles one package at a time too, and a cold
# build took 188 s that way against 108 s two at a time.
unit: ## go test -race on every package, one package at a time (needs the Docker engine and `make images`)
	set -o pipefail; $(GO) test -race -count=1 -p 2 -run '^$$' ./... | { grep -vE '^ok\s' || true; }
	$(GO) test -race -count=1 -p 1 -timeout 40m ./...

fuzz: ## fuzz the input decoders briefly (FUZZTIME=$(FUZZTIME))
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeTaskEvent$$' -fuzztime $(FUZZTIME) ./api
	$(GO) test -run '^$$' -fuzz '^FuzzManagerHandler$$' -fuzztime $(FUZZTIME) ./api
	$(GO) test -run '^$$' -fuzz '^FuzzCallerHeader$$' -fuzztime $(FUZZTIME) ./api
	$(GO) test -run '^$$' -fuzz '^FuzzParsePosition$$' -fuzztime $(FUZZTIME) ./api
	$(GO) test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME) ./fsm
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeSnapshotFile$$' -fuzztime $(FUZZTIME) ./fsm

chaos: images ## the long chaos run: DURATION=10m SEED=<n> MANAGERS=3|5 [FAULTS=kill-leader,drain-worker,…] [ACTIVE=10] (prints the summary table)
	set -o pipefail; CHAOS_DURATION=$(or $(DURATION),10m) CHAOS_SEED=$(or $(SEED),$$(date +%s)) CHAOS_MANAGERS=$(or $(MANAGERS),3) CHAOS_FAULTS=$(FAULTS) CHAOS_ACTIVE=$(ACTIVE) \
		$(GO) test -run '^TestChaos$$' -count=1 -timeout 90m -v ./test | grep -vE '^\s+(procs|cluster|e2e)'

harness: images ## repeat the failure scenarios on real binaries and print median/p95/max (TRIALS=10)
	set -o pipefail; TRIALS=$(or $(TRIALS),10) $(GO) test -tags harness -run TestHarness -count=1 -timeout 60m -v ./test | grep -E '^\||trial|FAIL|ok'

.PHONY: bench
bench: build images ## Cube (security on, and --insecure beside it) vs Docker Swarm on this engine, recovery times and throughput (BENCH_TRIALS=20) → bench/RESULTS.md, bench/chart.svg
	set -o pipefail; BENCH_TRIALS=$(or $(BENCH_TRIALS),20) BENCH_CUBE_BIN=$(CURDIR)/$(BIN)/cube \
		$(GO) test -tags bench -run '^TestBench$$' -count=1 -timeout 300m -v ./test | grep --line-buffered -vE '^=== (RUN|PAUSE|CONT)'; \
	rc=$$?; \
	if [ -f /tmp/cube-bench-swarm.marker ]; then echo "make bench: leaving the swarm the run created"; \
		docker swarm leave --force || true; rm -f /tmp/cube-bench-swarm.marker; fi; \
	left=$$(docker ps -aq --filter label=cube.bench); if [ -n "$$left" ]; then docker rm -f $$left >/dev/null; fi; \
	exit $$rc

.PHONY: scale
scale: build ## control-plane benchmark: MANAGERS=3 real managers + WORKERS=100 simulated workers (in PROCS=2 processes, the last holding the 10 % killed), TASKS=1000, PROFILE=fast|lan (managers' timings), MODE=gossip (gossip members alone, no tasks: WORKERS=1000 fits), KEEP_LOGS=1 (keep the nodes' logs of a run that passed too) → bench/scale/results/*.json, bench/scale/SCALE.md
	set -o pipefail; SCALE_MANAGERS=$(or $(MANAGERS),3) SCALE_WORKERS=$(or $(WORKERS),100) SCALE_TASKS=$(or $(TASKS),1000) SCALE_PROCS=$(or $(PROCS),2) SCALE_MANAGER_PROFILE=$(PROFILE) SCALE_MODE=$(MODE) CUBE_KEEP_LOGS=$(KEEP_LOGS) \
		SCALE_CUBE_BIN=$(CURDIR)/$(BIN)/cube $(GO) test -tags scale -run '^TestScale$$' -count=1 -timeout 60m -v ./test | grep --line-buffered -vE '^=== (RUN|PAUSE|CONT)'

MACHINE_IMG := $(shell sed -n 's/.*"image": *"\([^"]*\)".*/\1/p' deploy/machine/machines.json)

machine-image: ## build the machine image ($(MACHINE_IMG)) from Debian's packages with debootstrap; once, ~2 min
	scripts/machine-image.sh $(MACHINE_IMG)

machine-files: images machine-image ## what a machine installs from /vagrant: bin/machine/cube and netem (static), the task images, the machines' credentials and bin/machine/env
	mkdir -p $(BIN)/machine/images
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDVERSION)' -o $(BIN)/machine/cube ./cmd/cube
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/machine/netem ./cmd/netem
	scripts/machine-credentials.sh $(BIN)/machine/cube
	@id=$$(docker image inspect --format '{{.Id}}' $(ECHO_IMG)); \
	if [ "$$(cat $(BIN)/machine/images/cube-echo.id 2>/dev/null)" != "$$id" ]; then \
		docker save -o $(BIN)/machine/images/cube-echo.tar $(ECHO_IMG) && echo "$$id" > $(BIN)/machine/images/cube-echo.id; fi

drill: machine-files ## machine-failure drills on the machines, Cube and Swarm (TRIALS=10 ONLY=1,2,… PROFILES=fast,default|none SWARM=0|fast|shipped) → drill/RESULTS.md
	set -o pipefail; DRILL_FULL=1 DRILL_TRIALS=$(TRIALS) DRILL_ONLY=$(ONLY) DRILL_PROFILES=$(PROFILES) DRILL_SWARM=$(SWARM) \
		$(GO) test -run '^TestDrill$$' -count=1 -timeout 300m -v ./drill | grep --line-buffered -vE '^=== (RUN|PAUSE|CONT)'

MACHINE_NET := $(shell sed -n 's/.*"network": *"\([^"]*\)".*/\1/p' deploy/machine/machines.json)

drill-down: ## remove every machine and the network the drills (or vagrant up) created
	@left=$$(docker ps -aq --filter label=cube.machines=$(MACHINE_NET)); if [ -n "$$left" ]; then docker rm -f -v $$left >/dev/null; echo "removed $$(echo $$left | wc -w) machines"; fi
	@if docker network inspect $(MACHINE_NET) >/dev/null 2>&1; then docker network rm $(MACHINE_NET) >/dev/null && echo "removed network $(MACHINE_NET)"; fi
	rm -rf .vagrant/machines/*/docker

cluster: build images ## run 3 managers + 3 workers on 127.0.0.1 in the background (ports in scripts/cluster.sh)
	scripts/cluster.sh up

cluster-down: ## stop the cluster, remove its task containers and data (logs stay in .cluster/logs)
	scripts/cluster.sh down

lint: ## gofmt, go vet, and go.mod/go.sum exactly as `go mod tidy` leaves them
	@if ! $(GO) mod tidy -diff >/dev/null 2>&1; then echo "go.mod or go.sum is not tidy; run 'go mod tidy' and commit the result:"; $(GO) mod tidy -diff; exit 1; fi
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$unformatted" ]; then echo "gofmt would change:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...

.PHONY: box
box: ## build the Vagrant box cube/bookworm for the libvirt provider from Debian's packages (root; CUBE_BOX_REBUILD=1 rebuilds)
	scripts/box.sh

clean: ## remove build output
	rm -rf $(BIN)
