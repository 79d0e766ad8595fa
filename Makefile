# medcl_lite: the two commands that matter are `make demo` and `make test` (README).
# Both create .venv if absent and install what they need; they work on a fresh machine that
# has only Python 3.11 and pip.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.medcl-installed
export HF_HUB_OFFLINE ?= 1
export PYTHONUNBUFFERED := 1

.PHONY: demo test install lab docs lint format notebooks bench lock clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# Re-install when the dependencies change; constraints.txt pins the versions the suite was run with.
$(STAMP): pyproject.toml constraints.txt | $(PY)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[dev,docs]"
	touch $@

install: $(STAMP)

## The quickstart reproduction on the built-in phantoms (2-core CPU: 14-18 min): runs/quickstart/
demo: install
	$(VENV)/bin/medcl reproduce 00_quickstart -f notebooks/params/quickstart/cpu_demo.yaml --name quickstart --no-progress

## The course website: README, chapters with their recorded reference runs, docs, API -> build/site/
docs: install
	$(PY) docs/site/build.py --out build/site

## JupyterLab on notebooks/, its Python kernel this project's .venv (LAB_ARGS: e.g. --no-browser)
lab: install
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

## The whole suite: ruff, notebook pairs in sync, unit tests, the notebooks in smoke mode (nbval)
test: install
	$(VENV)/bin/ruff check medcl_lite tests data_scripts benchmarks docs/site notebooks/*.py notebooks/solutions/*.py
	runs=$$(mktemp -d); MEDCL_RUNS=$$runs $(PY) -m pytest -q -p no:cacheprovider tests \
		--nbval-lax --nbval-current-env notebooks/*.ipynb notebooks/solutions/*.ipynb; status=$$?; rm -rf $$runs; exit $$status

lint: install
	$(VENV)/bin/ruff check medcl_lite tests data_scripts benchmarks docs/site notebooks/*.py notebooks/solutions/*.py

format: install
	$(VENV)/bin/ruff format medcl_lite tests data_scripts benchmarks
	$(VENV)/bin/ruff check --fix medcl_lite tests data_scripts benchmarks notebooks/*.py notebooks/solutions/*.py

## Regenerate every .ipynb (no outputs) from its py:percent source, the source of truth
notebooks: install
	$(VENV)/bin/jupytext --update --to ipynb notebooks/*.py notebooks/solutions/*.py

## Speed benchmark of the pretraining loop against a bare smp step (benchmarks/README.md)
bench: install
	$(PY) benchmarks/bench_pretrain_step.py

## Re-pin constraints.txt to the newest releases pyproject.toml admits (then run make test)
lock:
	rm -rf $(VENV)-lock && $(PYTHON) -m venv $(VENV)-lock
	$(VENV)-lock/bin/pip install --quiet --disable-pip-version-check -e ".[dev,docs]"
	{ sed -n '/^#/p' constraints.txt; $(VENV)-lock/bin/pip freeze --exclude-editable; } > constraints.txt.new
	mv constraints.txt.new constraints.txt && rm -rf $(VENV)-lock

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
