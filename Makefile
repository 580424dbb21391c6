# DeeperSensor API. `make run` serves on 127.0.0.1:8080; `make test` runs every test against the local
# PostgreSQL and Redis.
GO        ?= go
PKGS      ?= ./...
FUZZTIME  ?= 30s

.PHONY: run build test bench fuzz generate verify vet fmt

run: ## build, migrate and serve with the development defaults
	$(GO) run ./cmd/deepersensor

build: ## build the binaries into bin/
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/ ./cmd/...

test: clients/node/node_modules/.package-lock.json ## all tests, unit and integration, with the race detector
	$(GO) test -race -count=1 -timeout 20m $(PKGS)

# The official npm clients (openai, ollama) that the compatibility tests drive, at the versions the lock file
# pins. Without npm the tests that need them skip, saying so (and fail in CI).
clients/node/node_modules/.package-lock.json: clients/node/package-lock.json
	@if command -v npm >/dev/null; then npm ci --prefix clients/node --no-audit --no-fund --loglevel=error; \
	else echo "npm not found: the tests of the official npm clients will skip"; fi

# The chat suite against a real Ollama v0.17.4 serving ../shared/models/stories260K.gguf. scripts/ollama-build.sh
# builds it from the Go module proxy (CPU only; needs nlohmann-json3-dev and libstb-dev) when the user's cache
# lacks it, and prints its path; plain `make test` skips these tests, which need DS_OLLAMA_BIN.
.PHONY: test-ollama
test-ollama: clients/node/node_modules/.package-lock.json ## the chat suite against a real Ollama, built once and cached
	bin=$$(scripts/ollama-build.sh) && DS_OLLAMA_BIN="$$bin" nice $(GO) test -race -count=1 -timeout 10m -v ./internal/realollama/

bench: ## Go benchmarks with ns/op and allocs/op
	$(GO) test -run '^$$' -bench . -benchmem $(PKGS)

# What the gateway adds to a model call, end to end on loopback (about 7 minutes): the server built from this
# checkout against a fast fake model server, the same load direct and through it in alternating rounds. The
# report goes to stdout and docs/performance.md; run it on a quiet machine. BENCH_QUICK=1 is a smoke run of
# about 2 minutes whose report goes to stdout only. BENCH_FLAGS passes more flags, such as -only 'native-chat'
# or -cpuprofile cpu.out.
.PHONY: bench-e2e
bench-e2e: ## end-to-end benchmark beside the upstream; writes docs/performance.md
	$(GO) run ./cmd/bench-e2e $(if $(BENCH_QUICK),,-out docs/performance.md) $(BENCH_FLAGS)

fuzz: ## each fuzz target for FUZZTIME
	@set -e; for pkg in $$($(GO) list $(PKGS)); do \
	  for target in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "fuzz $$pkg $$target"; \
	    $(GO) test -run '^$$' -fuzz "^$$target$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; \
	done

generate: ## regenerate gen/ from api/openapi.yaml, schema/ and queries/
	$(GO) generate .

verify: generate ## fail when gen/ is stale
	CGO_ENABLED=0 $(GO) tool sqlc diff
	@git diff --exit-code -- gen/ || (echo "gen/ is stale: run 'make generate' and commit" >&2; exit 1)
	@test -z "$$(git status --porcelain -- gen/)" || (git status --porcelain -- gen/; echo "gen/ has files that are not committed" >&2; exit 1)

vet: ## go vet and gofmt
	$(GO) vet $(PKGS)
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); echo "gofmt needed" >&2; exit 1)

SPECTRAL ?= npx --yes @stoplight/spectral-cli@6.16.3

.PHONY: lint-api
lint-api: ## lint api/openapi.yaml with Spectral and .spectral.yaml (needs Node and the npm registry)
	$(SPECTRAL) lint api/openapi.yaml --ruleset .spectral.yaml --fail-severity warn
