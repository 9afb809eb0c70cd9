# longsum: `make demo` and `make test` set everything up on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.longsum-installed
# The CPU build of torch; an unpinned torch would pull a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
# llama-cpp-python compiles from source: skip the parts longsum does not use.
export CMAKE_ARGS ?= -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF
export CMAKE_BUILD_PARALLEL_LEVEL ?= $(shell nproc 2>/dev/null || echo 2)
# Nothing phones home: no Prefect analytics, no Hugging Face hub.
export DO_NOT_TRACK := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
DEMO_DB ?= demo.duckdb
DEMO_FILE ?= examples/doyle_scandal_in_bohemia.txt

.PHONY: install browser postgres demo test test-fast bench bench-full clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]" --config-settings editable_mode=compat
	$(BIN)/python -m pipelines.llm.embedded
	@touch $(STAMP)

demo: install
	$(BIN)/summarize $(DEMO_FILE) --db $(DEMO_DB) -o examples/demo_summary.txt
	$(BIN)/summarize runs --db $(DEMO_DB) --limit 5

# The report's browser test drives Debian's chromium (headless); no browser build is downloaded.
browser:
	@command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)

# The lake tests' PostgreSQL: the machine's own cluster, started, with a role for this user.
postgres:
	@tests/start_postgres.sh

# LONGSUM_REQUIRE_LAKE: the lake tests fail (instead of skipping) without PostgreSQL or the extensions.
# One pytest worker per core (pytest-xdist): most tests wait on subprocesses, servers and models.
TEST_WORKERS ?= auto
test: install browser postgres
	LONGSUM_REQUIRE_LAKE=1 $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal

test-fast: install
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal -m "not llm and not slow"

# Every benchmark, each on a small input: a few minutes on 2 cores, one table per area.
BENCH_QUICK = \
	"bench_startup.py" \
	"bench_concurrency.py" \
	"bench_rouge.py" \
	"bench_bertscore.py --stories 10" \
	"bench_flows.py --quick" \
	"bench_documents.py --quick" \
	"bench_report.py" \
	"bench_store_connections.py" \
	"bench_pipeline.py --quick" \
	"bench_booookscore.py --quick" \
	"bench_compress.py --quick" \
	"bench_reference.py --quick"
bench: install
	@for bench in $(BENCH_QUICK); do echo; echo "== bench/$$bench"; $(BIN)/python bench/$$bench || exit 1; done

# The same areas at full size (hours with the embedded model): whole stories
# and a full novel's peak RSS, the BooookScore reference comparison, the
# checker on a whole 600-word summary, every code task and three stories.
BENCH_FULL = \
	"bench_bertscore.py" \
	"bench_flows.py" \
	"bench_pipeline.py --full" \
	"bench_booookscore.py" \
	"bench_reference.py" \
	"bench_compress.py"
bench-full: install
	@for bench in $(BENCH_FULL); do echo; echo "== bench/$$bench"; $(BIN)/python bench/$$bench || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache $(DEMO_DB) examples/demo_summary.txt
