# Kiln — run `make` for the list of targets.
SHELL := /bin/bash
GO ?= go
OUT ?= _out
BOARD ?= generic-amd64
ARCH ?= $(shell $(GO) env GOARCH)
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
SHA ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
LDFLAGS := -s -w -X github.com/kiln-os/kiln/machined/version.Tag=$(VERSION) -X github.com/kiln-os/kiln/machined/version.SHA=$(SHA)
# grpcnotrace: see images/build.NodeBuildTags.
GOBUILD := CGO_ENABLED=0 $(GO) build -trimpath -tags grpcnotrace -ldflags '$(LDFLAGS)'

.DEFAULT_GOAL := help

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: setup
setup: ## Install what building and testing need on Debian 12 (root: apt sources, packages).
	tools/setup/debian.sh

.PHONY: build
build: ## Build machined and kctl into _out/.
	@mkdir -p $(OUT)
	$(GOBUILD) -o $(OUT)/machined ./machined/cmd/machined
	$(GOBUILD) -o $(OUT)/kctl ./tools/kctl

.PHONY: test
test: lint ## Run the tests (unit; privileged ones too when run as root). The README's test command.
	$(GO) test -count=1 ./...

.PHONY: e2e
e2e: ## QEMU end-to-end tests: build an image, boot it (TCG), drive it with kctl (needs make setup inputs kernel).
	$(GO) test -count=1 -timeout 40m ./tools/e2e/... -e2e

.PHONY: cluster
cluster: kernel ## Bring up one node in QEMU from a freshly built image and point kctl at it (context "kiln").
	$(GOBUILD) -o $(OUT)/kctl ./tools/kctl
	$(OUT)/kctl cluster create --name kiln --board $(BOARD)

.PHONY: cluster-destroy
cluster-destroy: ## Remove the node made by make cluster.
	$(OUT)/kctl cluster destroy --name kiln

.PHONY: test-race
test-race: ## Run the tests with the race detector.
	$(GO) test -race -count=1 ./...

.PHONY: lint
lint: ## gofmt and go vet.
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

.PHONY: generate
generate: ## Regenerate protobuf code, the config JSON schema and docs/config.md.
	$(GO) generate ./...

.PHONY: check-generated
check-generated: generate ## Fail when generated files are stale.
	@git add -N . >/dev/null 2>&1 || true
	@if ! git diff --exit-code --stat; then \
	  echo "generated files are stale: run 'make generate' and commit"; exit 1; fi

.PHONY: inputs
inputs: ## Fetch the pinned Debian packages images take into _out/cache (apt-get download, sha256 checked).
	images/fetch-inputs.sh $(OUT)/cache

.PHONY: kernel-repro
kernel-repro: kernel ## Build the kernel a second time in a scratch directory and compare it byte for byte with make kernel's (~40 min).
	KILN_KERNEL_REPRO=1 $(GO) test ./images/kernel -run '^TestBuildReproducible$$' -count 1 -timeout 90m -v

.PHONY: kernel
kernel: ## Build the kernels Kiln builds (generic-amd64) from Debian's pinned source into _out/cache/kernels (once per pin; ~40 min).
	$(GO) run ./tools/kctl image kernel --board generic-amd64 --inputs $(OUT)/cache

.PHONY: image
image: kernel ## Build a node image: make image BOARD=generic-amd64 FORMAT=raw,qcow2,iso,uki,kernel [COMPONENTS=dir of make components, e.g. /var/cache/kiln/components/amd64]
	@mkdir -p $(OUT)
	$(GOBUILD) -o $(OUT)/machined-$(BOARD) ./machined/cmd/machined
	$(GO) run ./tools/kctl image build --board $(BOARD) --format $(or $(FORMAT),raw) \
	  --inputs $(OUT)/cache --machined $(OUT)/machined-$(BOARD) --output $(OUT)/images/$(BOARD) \
	  $(if $(COMPONENTS),--components $(COMPONENTS))

.PHONY: components
components: ## Build kube (k8s+etcd), containerd, runc, CNI, pause/CoreDNS images from pinned sources (cached by pins).
	controlplane/build.sh -a $(ARCH)

.PHONY: test-components
test-components: components ## Host tests of the built components: a control plane on 127.0.0.1, containerd+runc, the eBPF proxy agent against a real apiserver (root).
	cd controlplane/hosttest && $(GO) vet . && $(GO) test -count=1 -v .
	KILN_COMPONENTS=$${KILN_COMPONENTS:-$(CURDIR)/_out/components} \
	  $(GO) test ./tools/bench/proxy -run '^TestAgentAgainstAPIServer$$' -v -count=1 -timeout 20m

.PHONY: verify-modules
verify-modules: ## go mod verify in the root module and every nested one.
	$(GO) mod verify
	for m in controlplane/kube controlplane/kubeproxy controlplane/runtime/containerd controlplane/runtime/runc controlplane/runtime/cni controlplane/images/coredns controlplane/hosttest; do \
	  (cd $$m && $(GO) mod verify) || exit 1; done

.PHONY: fuzz
fuzz: ## Fuzz the config decoder for 60s.
	$(GO) test ./machined/config -run '^$$' -fuzz FuzzParse -fuzztime 60s

.PHONY: bench
bench: bench-api bench-image bench-boot bench-network bench-proxy ## Run all benchmarks.

.PHONY: bench-network
bench-network: ## Host network reconcile (100 addresses + 100 routes, one change) next to ip -batch (root).
	$(GO) test ./networking -run '^$$' -bench . -benchtime 30x -count 1

.PHONY: bench-proxy
bench-proxy: ## eBPF service proxy: datapath benchmarks, then side by side with upstream kube-proxy (iptables, nftables) at 1k/10k Services (root).
	$(GO) test ./networking/serviceproxy -run '^$$' -bench . -benchtime 2s -count 1
	controlplane/build.sh kube kube-proxy
	KILN_COMPONENTS=$${KILN_COMPONENTS:-$(CURDIR)/_out/components} \
	  $(GO) test ./tools/bench/proxy -run '^$$' -bench ServiceProxy -benchtime 1x -timeout 120m -v

.PHONY: bench-image
bench-image: ## Assemble the generic-amd64 raw image from a warm cache, next to a cp floor.
	$(GO) test ./images/build -run '^$$' -bench 'AssembleRaw|CopyFloor' -benchtime 3x -count 1

.PHONY: bench-boot
bench-boot: ## QEMU (TCG) start → readiness and → first API call, direct and UEFI, next to a trivial-init floor.
	$(GO) test ./tools/bench/boot -run '^$$' -bench Boot -benchtime 3x -count 1 -timeout 40m

.PHONY: bench-boot-ab
bench-boot-ab: ## bench-boot with the image of git revision REV (default HEAD~1) booted alternately beside it.
	rm -rf _out/baseline _out/baseline-src
	git worktree add -f --detach _out/baseline-src $(or $(REV),HEAD~1)
	cd _out/baseline-src && $(GO) run ./tools/kctl image build --board generic-amd64 --format raw,kernel \
	  --inputs $(CURDIR)/_out/cache --output $(CURDIR)/_out/baseline; \
	  rc=$$?; cd $(CURDIR) && git worktree remove --force _out/baseline-src; exit $$rc
	KILN_BOOT_BASELINE=$(CURDIR)/_out/baseline $(MAKE) bench-boot

.PHONY: bench-api
bench-api: ## Benchmark apply-config round trip over mTLS and machined idle RSS.
	$(GO) test ./tools/bench/api -run '^$$' -bench 'BenchmarkAPI' -benchtime 200x -count 1
	$(GO) test ./tools/bench/api -run '^$$' -bench 'BenchmarkIdleRSS' -benchtime 1x -count 1

.PHONY: tidy
tidy: ## go mod tidy.
	$(GO) mod tidy

.PHONY: clean
clean: ## Remove build outputs.
	rm -rf $(OUT)
