# One way to run each tool. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PY := .venv/bin/python
PYTEST := $(PY) -m pytest

help: ## list the targets
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

.venv/.synced: pyproject.toml uv.lock
	@python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install -q uv==0.13.9
	@python3 -m uv sync --frozen --quiet
	@touch $@

venv: .venv/.synced ## install Python dependencies from uv.lock

# The console's browser libraries (htmx; axe-core for the accessibility tests) from the npm registry,
# exactly as package-lock.json pins them; no install scripts run. Re-run only when the lockfile changes.
node_modules/.installed: package.json package-lock.json
	@npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	@touch $@

console-assets: node_modules/.installed ## install the console's browser libraries from package-lock.json

chromium: venv ## Debian's chromium and a Japanese font for the browser tests (apt-get, once)
	@$(PY) deploy/local.py chromium

infra-up: venv ## start RabbitMQ, FerretDB (MongoDB wire) and Mailpit on 127.0.0.1
	@$(PY) deploy/local.py up
	@$(PY) -m deploy.rabbitmq_users apply --vhost / --secrets .local/secrets --portal dev-portal

infra-down: venv ## stop the servers infra-up started
	@$(PY) deploy/local.py down

infra-status: venv ## which servers answer, and where from
	@$(PY) deploy/local.py status

# A development system: the demo office (short clocks) and seed counsellors are loaded too.
# R16: Teams meetings come from the local Graph contract server (deploy/graph_contract.py), which
# answers Microsoft Graph's documented requests with development credentials; pre-issued rooms may
# point at its development rooms on 127.0.0.1 (MEETING_DEV_HOSTS; refused in prod).
DEV_GRAPH := GRAPH_CREDENTIALS='{"kushiro-gyosei":"dev-graph-secret","demo-town":"dev-graph-secret"}' \
	GRAPH_AUTHORITY_HOST=https://127.0.0.1:8443 GRAPH_BASE_URL=https://127.0.0.1:8443/v1.0 \
	GRAPH_CA_BUNDLE=$(CURDIR)/.local/graph/ca.pem MEETING_DEV_HOSTS='["127.0.0.1"]'
DEV_ENV := EXTRA_OFFICES_DIR=$(CURDIR)/deploy/offices-demo COUNSELLORS_FILE=$(CURDIR)/deploy/counsellors.yaml $(DEV_GRAPH)

up: infra-up console-assets ## servers plus the services and the console in the background; returns when all are ready
	@$(DEV_ENV) $(PY) deploy/processes.py up

down: venv ## stop the services and the servers; no stray process
	@$(PY) deploy/processes.py down
	@$(PY) deploy/local.py down

logs: ## follow the services' logs
	@$(PY) deploy/processes.py logs -f

demo: up console-assets ## narrated scenario through the whole system
	@$(DEV_ENV) $(PY) -m demo

# `make test` runs the suites on TEST_WORKERS pytest-xdist workers, a file's tests in one worker
# (tests/conftest.py says why): most of a test's time is waiting on servers and processes, so three
# workers on two cores finish in about half the serial time. TEST_WORKERS=0 runs them in one process.
TEST_WORKERS ?= 3
XDIST = $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

test: infra-up console-assets chromium haproxy-binary promtool ## all tests: unit, integration, e2e, browser, chaos, scale (brings up what they need)
	@$(PY) deploy/local.py build --only mongo,smtp
	@$(PYTEST) $(XDIST) tests

test-unit: venv ## pure rules, no servers
	@$(PYTEST) tests/unit

test-integration: infra-up ## stores and handlers against the real servers
	@$(PYTEST) tests/integration

test-e2e: infra-up ## the running services, driven over HTTP and AMQP as a portal would
	@$(PYTEST) tests/e2e

test-browser: infra-up console-assets chromium ## the console in headless Chromium (Playwright): flows, axe-core, keyboard
	@$(PYTEST) tests/browser

console-screenshots: infra-up console-assets chromium ## the console's screens, written to docs/console/ (the READMEs show them)
	@CONSOLE_SCREENSHOTS=$(CURDIR)/docs/console $(PYTEST) tests/browser -q

test-chaos: infra-up ## the chaos drills: servers and services killed and paused under a booking stream
	@$(PY) deploy/local.py build --only mongo,smtp
	@$(PYTEST) tests/chaos

# Issue 20: a 3-node RabbitMQ cluster of our own on loopback (Debian's rabbitmq-server, ports 26700-26723,
# data in .local/cluster/), HAProxy in front on 26700; never the shared servers' ports.
cluster-up: venv haproxy-binary ## a 3-node RabbitMQ cluster on 127.0.0.1 with HAProxy in front (deploy/rabbit_cluster.py)
	@$(PY) -m deploy.rabbit_cluster up

cluster-down: venv ## stop what cluster-up started (its data stays in .local/cluster/)
	@$(PY) -m deploy.rabbit_cluster down

test-scale: venv haproxy-binary ## the scale drills: 3-node cluster, two replicas of every service, failovers under load
	@$(PY) deploy/local.py build --only mongo,smtp
	@$(PYTEST) tests/scale

docs: venv ## write the AsyncAPI and OpenAPI documents to docs/
	@$(PY) -m ops.docs

bench: infra-up ## benchmarks with raw aio-pika and PyMongo baselines measured in the same run
	@$(PY) -m bench

# The deploy checks' binaries (tests/unit/test_cluster_manifests.py runs `haproxy -c`,
# tests/unit/test_observability.py promtool's checks): Debian's packages unpacked into ~/.cache
# (apt-get download, dpkg-deb -x: never installed, never started), once; `make test` and
# `make check-deploy` run both, so that in CI (CI=true) those tests run instead of skipping.
haproxy-binary: venv ## Debian's haproxy and its libraries unpacked into ~/.cache/consult-haproxy, once
	@$(PY) deploy/local.py haproxy

promtool: venv ## promtool out of Debian's prometheus (2.42) into ~/.cache/consult-promtool, once
	@$(PY) deploy/local.py promtool

# Optional: promtool of a current Prometheus (github.com/prometheus/prometheus v0.316.0 is 3.16.0)
# built from the Go module proxy, which tests/unit/test_observability.py runs as well where it is
# built, so that the files are checked against both; slow (936 s with a cold Go cache).
PROMTOOL_GO := $(HOME)/.cache/consult-promtool-go/bin/promtool

$(PROMTOOL_GO):
	@GOBIN=$(dir $(PROMTOOL_GO)) GOFLAGS="-mod=mod -buildvcs=false" \
		go install github.com/prometheus/prometheus/cmd/promtool@v0.316.0

promtool-go: $(PROMTOOL_GO) ## build a current Prometheus's promtool (Go module proxy; slow), once

check-deploy: venv haproxy-binary promtool ## deploy/cluster and deploy/observability against the code, haproxy -c, promtool
	@$(PYTEST) tests/unit/test_cluster_manifests.py tests/unit/test_observability.py -rs

lint: venv ## ruff and mypy
	@$(PY) -m ruff check .
	@$(PY) -m ruff format --check .
	@$(PY) -m mypy

format: venv ## apply ruff's formatting and fixes
	@$(PY) -m ruff format .
	@$(PY) -m ruff check --fix .

.PHONY: help cluster-up cluster-down test-scale docs bench venv promtool promtool-go haproxy-binary check-deploy infra-up infra-down infra-status up down logs demo test test-unit test-integration test-e2e test-browser console-screenshots test-chaos lint format console-assets chromium
