# Set-up and everyday commands. `make test` and `make quickstart` work on a fresh machine:
# they install what they need first. PYTHON may point at a virtual environment's interpreter.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
# The CPU wheel of torch; override with TORCH_SPEC="torch>=2.4" to keep a CUDA build you already have.
TORCH_SPEC ?= torch==2.13.0
STAMP := .install.stamp

.PHONY: install test test-slow quickstart bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PIP) install --quiet "$(TORCH_SPEC)"
	$(PIP) install --quiet -e '.[dev]'
	touch $(STAMP)

test: install
	$(PYTHON) -m pytest -q

test-slow: install
	$(PYTHON) -m pytest -q -m slow

quickstart: install
	$(PYTHON) -m molar_lightning quickstart --out runs/quickstart

bench: install
	$(PYTHON) benchmarks/id_models.py --data-dir ../shared/data/movielens-100k

clean:
	rm -rf $(STAMP) runs .molar_cache
