# mirec — the commands people type. `make help` lists them.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SHARED_DATA ?= ../shared/data
export PYTHONUNBUFFERED := 1

.DEFAULT_GOAL := help
.PHONY: help install run test test-fast lint fmt bench-quality bench-ablation bench-features bench-index bench-cold-start bench-serving bench-canary serve lock clean

help: ## list the commands
	@awk 'BEGIN {FS = ":.*##"} /^[a-zA-Z_-]+:.*##/ {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml requirements.lock
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps -e .
	@touch $(STAMP)

install: $(STAMP) ## create .venv and install the pinned stack (torch first)

run: $(STAMP) ## the main job: retraining pipeline end to end on generated demo data
	$(VENV)/bin/mirec pipeline demo

test: $(STAMP) ## unit + integration tests; starts Redis / PostgreSQL when down (and stops them after)
	infra/dev/test-services.sh $(PY) -m pytest -q

test-fast: $(STAMP) ## unit tests only: the inner loop while editing
	$(PY) -m pytest -q -m "not integration"

lint: $(STAMP) ## ruff check + format check, mypy, import contract
	$(VENV)/bin/ruff check src tests components pipelines benchmarks feature_repo
	$(VENV)/bin/ruff format --check src tests components pipelines benchmarks feature_repo
	$(VENV)/bin/mypy src/mirec
	$(VENV)/bin/lint-imports

fmt: $(STAMP) ## format the code
	$(VENV)/bin/ruff format src tests components pipelines benchmarks feature_repo
	$(VENV)/bin/ruff check --fix src tests components pipelines benchmarks feature_repo

bench-quality: $(STAMP) ## baselines and floors on Beauty (protocol B) and ml-100k (protocol A)
	$(PY) benchmarks/bench_quality.py --data-root $(SHARED_DATA)

bench-ablation: $(STAMP) ## Beauty ablation of the seed methods: one term per row, 2 jobs x 1 thread (~70 min)
	$(PY) benchmarks/bench_ablation.py --data-root $(SHARED_DATA)

bench-features: $(STAMP) ## Spark feature build scaling, Feast lookup latency, validation overhead
	$(PY) benchmarks/bench_features.py

bench-index: $(STAMP) ## faiss index build / latency / recall at 1e5 and 1e6 items
	$(PY) benchmarks/bench_index.py

bench-feedback: $(STAMP) ## feedback path: durable appends (group commit) + Feast push, SQLite and Redis, then over HTTP
	OMP_NUM_THREADS=1 $(PY) benchmarks/bench_feedback.py --http 16

bench-cold-start: $(STAMP) ## cold items (content tower) and cold users (MAIL) on ml-100k
	$(PY) benchmarks/bench_cold_start.py --data $(SHARED_DATA)/ml-100k

bench-serving: $(STAMP) ## closed-loop load against mirec serve: 1e5-item HNSW, Redis lookups, c1/16/64
	$(PY) benchmarks/bench_serving.py $(if $(BENCH_SECONDS),--seconds $(BENCH_SECONDS),)

bench-canary: $(STAMP) ## canary: Beauty replay (promote / rollback), A/A error rate, split p50 overhead
	$(PY) benchmarks/bench_canary.py --data-root $(SHARED_DATA)

serve: $(STAMP) ## serve the registry's production model on 127.0.0.1:$(PORT) (default 3000)
	$(VENV)/bin/mirec serve --port $(or $(PORT),3000) $(if $(REGISTRY),--registry $(REGISTRY),)

lock: $(STAMP) ## refresh requirements.lock from the installed environment
	$(PY) -m pip freeze --exclude-editable | grep -v '^-e' > requirements.lock

clean: ## remove build outputs and local runs (keeps .venv)
	rm -rf build dist runs local_outputs .mirec .pytest_cache .mypy_cache .ruff_cache
