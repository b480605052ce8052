# Set-up and the two README commands. `make test` and `make demo` create the virtual environment on first use.
VENV ?= .venv
PYTHON := $(VENV)/bin/python
# Offline by design: nothing here may reach a model hub.
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1

.PHONY: install test demo

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	# A plain `torch` requirement pulls a multi-GB CUDA build; the CPU build of 2.13.0 is installed first if absent.
	$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install --quiet torch==2.13.0
	$(PYTHON) -m pip install --quiet -e ".[train,test]"
	touch $@

install: $(VENV)/.installed

test: $(VENV)/.installed
	$(PYTHON) -m pytest -q

demo: $(VENV)/.installed
	$(PYTHON) -m transformers_self1e.convert reference \
		--checkpoint ../shared/reference/records/tiny-112/official_model.safetensors \
		--reference-config ../shared/reference/records/tiny-112/meta.json \
		--out outputs/tiny-112-converted \
		--verify ../shared/reference/records/tiny-112
