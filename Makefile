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

.PHONY: setup assets book test unit nbval student weights clean
setup: $(VENV)/.installed

# MathJax, mermaid and the widget manager from npm, served by the built site (it reads offline).
assets:
	bash scripts/web-assets.sh

$(VENV)/.installed: pyproject.toml Makefile scripts/install-fonts.sh scripts/install-browser.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PIP) install -e ".[book,test]"
	$(BIN)/python -c "import torch, jieba, snownlp, jupyter_book, nbval, sphinx_exercise, sphinxcontrib.mermaid"
	bash scripts/install-fonts.sh
	bash scripts/install-browser.sh
	$(BIN)/python -c "from llmcourse.viz import find_cjk_font; print('matplotlib CJK font:', find_cjk_font())"
	touch $@

# One torch thread, as in `make test`: CPU results repeat bit for bit at a fixed thread count, so the
# book shows exactly the numbers nbval checks against the stored notebooks.
book: setup assets
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/jupyter-book build . --warningiserror --keep-going
	@echo "book: _build/html/index.html"

# One torch thread per process: two xdist workers (each with its notebook kernel) share the 2 cores
# instead of oversubscribing them, and the stored outputs were made with one thread (CPU results repeat
# bit for bit at a fixed thread count; a GPT trained on two threads differs in the last digits).
test: setup assets
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/python -m pytest -n 2 --dist loadfile --nbval tests notebooks

unit: setup assets
	$(BIN)/python -m pytest -q tests

nbval: setup
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/python -m pytest -n 2 --dist loadfile --nbval notebooks

# Student versions of the chapters (solutions removed, graded checks kept), each executed once to
# prove it still runs top to bottom.
student: setup
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/python -m llmcourse.coursework student notebooks/*.ipynb --out student --execute

# Retrain the weights the package ships (llmcourse/weights/, minutes of CPU each) from their recipes.
weights: setup
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/python -m llmcourse.pretrained build all

clean:
	rm -rf _build
