# Two fresh-machine entry points (see README):
#   make reproduce   -- the main job (quick reproduction into ./results)
#   make test        -- the test suite (ruff + pytest)
#   make docs        -- the documentation site, built strictly (CI runs it after the tests)
# Each bootstraps its own virtual environment in .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
OUT ?= results

.PHONY: reproduce test docs venv clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -c constraints.txt -e ".[test,dask,docs,transformers]"
	touch $(STAMP)

venv: $(STAMP)

reproduce: $(STAMP)
	$(BIN)/slt-tms reproduce --profile quick --out $(OUT)

test: $(STAMP)
	$(BIN)/ruff check slt_tms tests benchmarks examples
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n 2 -q

# No --quiet: it drops the warnings before --strict counts them (a strict build then never fails).
docs: $(STAMP)
	SLT_TMS_NO_PROGRESS=1 $(BIN)/mkdocs build --strict
	@! grep -rl "Traceback (most recent call last)" site --include=*.html || \
		(echo "an executed example in the docs failed (see the pages above)"; exit 1)

clean:
	rm -rf $(VENV) build *.egg-info site
