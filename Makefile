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
# that has a molecule.yml). Narrow with `make molecule SCENARIOS="base"`.
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
lint: venv ## yamllint, ansible-lint (production, offline), zizmor (the workflows, offline), ruff, mypy
	yamllint --strict .
	zizmor --offline --no-progress .github/workflows
	ansible-lint --offline
	ruff check .
	ruff format --check .
	mypy filter_plugins library module_utils roles/bluegreen/files harness monitoring tests/unit tests/cd scripts/image-digest.py scripts/ci-needs.py scripts/github-settings.py scripts/cd-plan.py app/archibald_app

.PHONY: unit
unit: venv node-unit ## Unit tests: plugins, harness, roles' interfaces, the app, the Node package
	pytest -q tests/unit app/tests

NODE_PACKAGE := node/archibald-contract
# npm installs from the registry the machine's npm config names; the lockfile names none.
$(NODE_PACKAGE)/node_modules/.installed: $(NODE_PACKAGE)/package-lock.json
	@command -v npm >/dev/null || { echo "make: npm is missing: apt-get install nodejs npm (system-packages.txt)"; exit 1; }
	npm ci --prefix $(NODE_PACKAGE) --no-audit --no-fund --loglevel=error
	@touch $@

.PHONY: node-unit
node-unit: $(NODE_PACKAGE)/node_modules/.installed ## The Node package's tests (APP_CONTRACT.md): tsc, then node --test
	npm test --prefix $(NODE_PACKAGE) --silent

.PHONY: molecule
molecule: app-images ## Every Molecule scenario (create, converge, idempotence, verify, destroy)
	$(BIN)/python -m harness.scenarios $(SCENARIOS)

.PHONY: cd-test
cd-test: app-images ## Execute cd.yml's deploy job against a sandbox host (cd-test); smoke-test the app images and run them through the app contract (app-image)
	$(BIN)/python -m harness.scenarios cd-test app-image

.PHONY: contract
contract: venv ## Run an app image through the app contract (APP_CONTRACT.md): make contract IMAGE=<ref> [CONTRACT_ARGS=...]
	@test -n "$(IMAGE)" || { echo "make contract: name the image, e.g. make contract IMAGE=127.0.0.1:5000/archibald/app:v1 CONTRACT_ARGS=--reference"; exit 2; }
	$(BIN)/python harness/contract.py $(IMAGE) $(CONTRACT_ARGS)

.PHONY: scenarios
scenarios: app-images ## Every Molecule scenario and cd-test: role scenarios and cd-test four at a time, then the whole stack on three hosts
	$(BIN)/python -m harness.scenarios $(SCENARIOS) cd-test app-image

.PHONY: ci-estimate
ci-estimate: venv ## Print the estimated wall time of ci.yml on GitHub from the scenario budgets
	$(BIN)/python -m harness.scenarios --estimate-github

.PHONY: test
# Each stage through the time ledger (harness/ledger.py), printed at the end.
LEDGER := $(BIN)/python -m harness.ledger
# lint, unit and the test bed's images need nothing of each other: they run at
# once, each one's output printed whole when it ends (.cache/stage-logs/). One
# after the other they took 46, 96 and 113 s on a fresh machine.
test: venv ## Everything CI runs: lint, unit and images at once, then scenarios, then the time ledger
	$(LEDGER) reset
	$(LEDGER) together lint unit images -- $(MAKE) --no-print-directory
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
