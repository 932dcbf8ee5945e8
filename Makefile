# kubectl-agent: the commands a newcomer and CI run. `make help` lists them.
SHELL := /bin/bash
GO ?= go
BIN := $(CURDIR)/bin
CACHE := $(CURDIR)/.cache
TOOLS := $(CACHE)/tools
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT ?= $(shell git rev-parse HEAD 2>/dev/null)
DATE ?= $(shell date -u +%Y-%m-%dT%H:%M:%SZ)
LDFLAGS := -s -w -X github.com/kubectl-agent/kubectl-agent/pkg/buildinfo.Version=$(VERSION) \
	-X github.com/kubectl-agent/kubectl-agent/pkg/buildinfo.Commit=$(COMMIT) \
	-X github.com/kubectl-agent/kubectl-agent/pkg/buildinfo.Date=$(DATE)
STATICCHECK_VERSION := v0.8.2
GORELEASER_VERSION := v2.13.3
KREW_VERSION := v0.4.3
# Tests that start a control plane run a package at a time on these small machines.
TEST_FLAGS ?= -race -count=1 -timeout 30m -p 2

.PHONY: help build controlplane test demo bench soak lint completions release-check clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-15s %s\n", $$1, $$2}'

build: ## build kubectl-agent, agent-broker and the completion helper into ./bin
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/ ./cmd/kubectl-agent ./cmd/agent-broker
	cp plugin/kubectl_complete-agent $(BIN)/

controlplane: ## build the pinned etcd, kube-apiserver, kubectl and kwok into .cache/bin
	test/controlplane/build.sh $(CACHE)/bin

test: controlplane ## run every unit and e2e test with -race (builds the control plane first)
	$(GO) test $(TEST_FLAGS) ./...

demo: controlplane build ## play a pipeline run end to end on a local control plane
	$(GO) run ./test/demo

bench: controlplane build ## run the benchmarks and print their figures
	$(GO) test -run '^$$' -bench . -benchmem -count=1 ./... | tee $(CACHE)/bench.txt

soak: controlplane build ## 200 concurrent pipelines, two brokers on one PostgreSQL, with a broker and PostgreSQL restarted
	$(GO) run ./test/soak -bin-dir $(BIN) $(SOAK_FLAGS)

lint: ## gofmt, go vet, staticcheck, and krew's own manifest validator
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "not gofmt-clean:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./...
	$(GO) run sigs.k8s.io/krew/cmd/validate-krew-manifest@$(KREW_VERSION) -manifest plugin/agent.yaml -skip-install

completions: ## regenerate the committed shell completion scripts
	$(GO) run ./cmd/kubectl-agent completion bash > completions/kubectl-agent.bash
	$(GO) run ./cmd/kubectl-agent completion zsh > completions/kubectl-agent.zsh
	$(GO) run ./cmd/kubectl-agent completion fish > completions/kubectl-agent.fish
	$(GO) run ./cmd/kubectl-agent completion powershell > completions/kubectl-agent.ps1

$(TOOLS)/goreleaser:
	GOBIN=$(TOOLS) $(GO) install github.com/goreleaser/goreleaser/v2@$(GORELEASER_VERSION)

release-check: $(TOOLS)/goreleaser ## goreleaser check and a snapshot build for this platform
	$(TOOLS)/goreleaser check
	$(TOOLS)/goreleaser build --snapshot --clean --single-target

clean: ## remove build outputs (keeps the control plane cache)
	rm -rf $(BIN) dist
