# Two commands do all set-up: `make train` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DOCS_PORT ?= 8000
# mkdocs-material prints a banner about MkDocs 2 on every build without this.
export NO_MKDOCS_2_WARNING := 1

.PHONY: train test bench docs docs-serve clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,docs]'
	touch $@

train: $(VENV)/.installed
	$(PY) scripts/train_lenet.py $(ARGS)

test: $(VENV)/.installed
	$(PY) -m pytest -q -n auto --dist worksteal $(ARGS)

bench: $(VENV)/.installed
	$(PY) benchmarks/bench_lenet.py

# The documentation site, built offline into site/ (tests/test_docs.py builds it in make test too).
docs: $(VENV)/.installed
	$(PY) -m mkdocs build --strict --site-dir site

docs-serve: $(VENV)/.installed
	$(PY) -m mkdocs serve --dev-addr 127.0.0.1:$(DOCS_PORT)

clean:
	rm -rf $(VENV) runs site .pytest_cache
