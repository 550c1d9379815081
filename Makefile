# archibald-ops: two targets do everything on a fresh Debian machine with a
# running Docker daemon:
#   make deploy   set-up, a local sandbox "VPS", deploy.yml against it
#   make test     set-up, lint, unit tests, every Molecule scenario, the CD job executed
# Everything else here is a step of those two.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)
export ANSIBLE_CONFIG := $(abspath ansible.cfg)
export PIP_DISABLE_PIP_VERSION_CHECK := 1

# Scenarios run by `make molecule` (default: every directory under molecule/
# that has a molecule.yml). Narrow with `make molecule SCENARIOS="docker"`.
SCENARIOS ?= $(sort $(patsubst molecule/%/molecule.yml,%,$(wildcard molecule/*/molecule.yml)))
APP_VERSION ?= v1
SANDBOX_INVENTORY := inventory/sandbox

.PHONY: help
help: ## Show the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

# --- set-up -----------------------------------------------------------------

$(VENV)/.installed: requirements.txt app/requirements.txt
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV) || { \
	  echo "make: could not create a virtualenv with $(PYTHON): apt-get install python3-venv"; exit 1; }
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r requirements.txt -r app/requirements.txt
	@touch $@

.PHONY: venv
venv: $(VENV)/.installed ## Virtualenv with the pinned tools (reused when up to date)

.PHONY: images
images: venv ## Debian 12/13 base, VPS, python and registry images (content-hashed)
	$(BIN)/python harness/testbed.py images

.PHONY: registry
registry: images ## Start the local image registry
	$(BIN)/python harness/testbed.py registry

.PHONY: app-images
app-images: registry ## Build the reference app's test versions and push them
	$(BIN)/python harness/testbed.py app-images

# --- tests ------------------------------------------------------------------

.PHONY: lint
lint: venv ## yamllint, ansible-lint (production, offline), ruff, mypy
	yamllint --strict .
	ansible-lint --offline
	ruff check .
	ruff format --check .
	mypy filter_plugins library module_utils roles/bluegreen/files harness monitoring tests/unit tests/cd scripts/image-digest.py app/archibald_app

.PHONY: unit
unit: venv ## Unit tests: plugins, harness, roles' interfaces, the app
	pytest -q tests/unit app/tests

.PHONY: molecule
molecule: app-images ## Every Molecule scenario (create, converge, idempotence, verify, destroy)
	$(BIN)/python -m harness.scenarios $(SCENARIOS)

.PHONY: cd-test
cd-test: app-images ## Execute cd.yml's deploy job against a sandbox host (3 releases); smoke-test the app image; run it through the app contract
	$(BIN)/python -m harness.scenarios cd-test

.PHONY: contract
contract: venv ## Run an app image through the app contract (APP_CONTRACT.md): make contract IMAGE=<ref> [CONTRACT_ARGS=...]
	@test -n "$(IMAGE)" || { echo "make contract: name the image, e.g. make contract IMAGE=127.0.0.1:5000/archibald/app:v1 CONTRACT_ARGS=--reference"; exit 2; }
	$(BIN)/python harness/contract.py $(IMAGE) $(CONTRACT_ARGS)

.PHONY: scenarios
scenarios: app-images ## Every Molecule scenario and cd-test: role scenarios and cd-test four at a time, then the whole stack on three hosts
	$(BIN)/python -m harness.scenarios $(SCENARIOS) cd-test

.PHONY: ci-estimate
ci-estimate: venv ## Print the estimated wall time of ci.yml on GitHub from the scenario budgets
	$(BIN)/python -m harness.scenarios --estimate-github

.PHONY: test
# Each stage through the time ledger (harness/ledger.py), printed at the end.
LEDGER := $(BIN)/python -m harness.ledger
test: venv ## Everything CI runs: lint, unit, scenarios, then the time ledger
	$(LEDGER) reset
	$(LEDGER) run lint -- $(MAKE) --no-print-directory lint
	$(LEDGER) run unit -- $(MAKE) --no-print-directory unit
	$(LEDGER) run app-images -- $(MAKE) --no-print-directory app-images
	$(LEDGER) run scenarios -- $(MAKE) --no-print-directory scenarios
	@$(LEDGER) print

.PHONY: ledger
ledger: venv ## Print the time ledger of the last `make test` (.cache/ledger.jsonl)
	@$(LEDGER) print

# --- the sandbox ------------------------------------------------------------

.PHONY: deploy
deploy: app-images ## Provision the local sandbox VPS and deploy APP_VERSION (default v1)
	ansible-playbook playbooks/sandbox.yml
	ansible-playbook deploy.yml -i $(SANDBOX_INVENTORY) -e app_version=$(APP_VERSION)

.PHONY: status
status: venv ## What an inventory's host serves: colours, versions, health, canary, lock, events, alerts (INVENTORY=inventory/sandbox)
	$(BIN)/ansible-playbook playbooks/status.yml -i $(or $(INVENTORY),$(SANDBOX_INVENTORY))

.PHONY: logs
logs: venv ## Follow a service's logs on the host: make logs [INVENTORY=...] [COLOR=active] [SERVICE=backend] | ACCESSORY=redis [FOLLOW=0]
	PATH="$(BIN):$$PATH" scripts/logs.sh $(or $(INVENTORY),$(SANDBOX_INVENTORY)) $(if $(ACCESSORY),--accessory $(ACCESSORY),$(or $(COLOR),active) $(or $(SERVICE),backend))

.PHONY: sandbox-destroy
sandbox-destroy: venv ## Remove the sandbox VPS
	ansible-playbook playbooks/sandbox.yml -e sandbox_state=absent

# --- housekeeping -----------------------------------------------------------

.PHONY: dashboards
dashboards: venv ## Regenerate the Grafana dashboards from code
	$(BIN)/python monitoring/dashboards/generate.py

.PHONY: clean
clean: ## Remove test containers, images and the virtualenv
	-for s in $(SCENARIOS); do $(BIN)/molecule destroy -s $$s >/dev/null 2>&1; done
	-PYTHONPATH=. $(BIN)/python tests/cd/sandbox.py down
	-$(BIN)/python harness/testbed.py clean
	rm -rf $(VENV) app/.wheels .cache
