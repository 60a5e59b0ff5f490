# Single entry point. `make book` builds the book, `make test` runs every test; both set up first.
VENV   ?= .venv
PYTHON ?= python3
BIN    := $(VENV)/bin
# CPU torch: on these machines torch==2.13.0 is a local CPU wheel. On a CUDA machine use
#   make TORCH_SPEC=torch setup
# On a fresh cloud runner: make test TORCH_SPEC=torch TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
PIP := $(BIN)/python -m pip --disable-pip-version-check -qq

.PHONY: setup assets book test unit nbval record tolerances student weights verify-weights experiments verify-experiments clean
setup: $(VENV)/.installed

# MathJax, mermaid and the widget manager from npm, served by the built site (it reads offline).
assets:
	bash scripts/web-assets.sh

$(VENV)/.installed: pyproject.toml Makefile scripts/install-fonts.sh scripts/install-browser.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PIP) install -e ".[book,test,chapters]"
	$(BIN)/python -c "import torch, jieba, snownlp, sklearn, rank_bm25, jupyter_book, nbval, sphinx_exercise, sphinxcontrib.mermaid"
	bash scripts/install-fonts.sh
	bash scripts/install-browser.sh
	$(BIN)/python -c "from llmcourse.book.viz import find_cjk_font; print('matplotlib CJK font:', find_cjk_font())"
	touch $@

# The book renders the stored notebook outputs, which `make test` re-executes and checks; about a
# minute. `make book EXECUTE=1` executes every chapter during the build instead (one torch thread, as
# the stored outputs were recorded; about 10 minutes).
EXECUTE ?=
# An executing build writes the running perplexity table to a scratch copy, not to the shipped one.
book: setup assets
	$(if $(EXECUTE),mkdir -p _build && $(BIN)/python scripts/book-config.py --execute > _build/config-execute.yml && \
	  cp llmcourse/book/results/perplexity.json _build/perplexity.json &&) \
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(if $(EXECUTE),LLMCOURSE_RESULTS_FILE=$(CURDIR)/_build/perplexity.json) \
	  $(BIN)/jupyter-book build . --warningiserror --keep-going $(if $(EXECUTE),--config _build/config-execute.yml)
	@echo "book: _build/html/index.html"

# Two xdist workers, one torch thread each, fill the 2 cores. nbval runs the notebooks on another set of
# torch CPU kernels than the recording's and compares their numbers within notebooks/tolerances.json
# (llmcourse/book/nbval_plugin.py, loaded by the root conftest.py).
test: setup assets
	$(BIN)/python -m pytest -n 2 --dist loadfile --no-loadscope-reorder --nbval tests notebooks

unit: setup assets
	$(BIN)/python -m pytest -q tests

nbval: setup
	$(BIN)/python -m pytest -n 2 --dist loadfile --no-loadscope-reorder --nbval notebooks

# Re-execute and store chapters the way the stored outputs are meant to be made (one thread, native
# kernels, default preset): `make record` for all, `make record NOTEBOOKS=notebooks/06_transformer_gpt.ipynb`.
NOTEBOOKS ?=
record: setup
	$(BIN)/python -m llmcourse.book.record $(if $(NOTEBOOKS),$(NOTEBOOKS),--all) --jobs 2

# Execute the chapters on every stand-in numerical path, re-size notebooks/tolerances.json from how far
# the numbers moved, and rewrite the report page (about 45 minutes on 2 cores for all chapters).
tolerances: setup
	$(BIN)/python -m llmcourse.book.reproducibility run $(NOTEBOOKS)

# Student versions of the chapters (solutions removed, graded checks kept), each executed once to
# prove it still runs top to bottom.
student: setup
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/python -m llmcourse.book.coursework student notebooks/*.ipynb --out student --execute

# Retrain the weights the package ships (llmcourse/book/weights/, minutes of CPU each) from their recipes.
weights: setup
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/python -m llmcourse.book.pretrained build all

# Retrain every shipped weights file from scratch into a temporary folder and compare (about 20 minutes):
# bit for bit on the CPU and torch that built them, metrics within 2 % elsewhere. `make test` keeps only
# a fast guard (hashes, one re-measured metric, the first updates replayed: tests/test_pretrained_guard.py).
verify-weights: setup
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/python -m llmcourse.book.pretrained verify all

# Rerun the experiments whose results the package ships (llmcourse/book/results/*.json, about two hours of
# one CPU core in all): run after `make weights`, since chapter 7's starts from the shipped weights.
experiments: setup
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/python -m llmcourse.book.experiments build all

# Rerun them into a temporary file and compare: identical on the CPU and torch that built them, every
# summary number within the recipe's declared band elsewhere.
verify-experiments: setup
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/python -m llmcourse.book.experiments verify all

clean:
	rm -rf _build
