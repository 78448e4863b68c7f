# Two commands do all the set-up on a fresh machine: `make test` and `make demo`.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
CUDA_HOME ?= /usr/local/cuda
export CUDA_HOME

.PHONY: .venv test test-fast demo results robustness clean

# the pinned stack, then the project in editable mode (builds subnet_kernels._C against that torch)
$(STAMP): requirements.txt setup.py $(wildcard csrc/*/*.cpp csrc/*/*.cu csrc/*.h csrc/*/*.h)
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet -r requirements.txt
	$(VENV)/bin/python -m pip install --quiet --no-build-isolation -e .
	# the editable install does not place subnet_kernels._C beside the package: build it in place
	$(VENV)/bin/python setup.py -q build_ext --inplace > build-ext.log 2>&1 || (tail -40 build-ext.log; false)
	touch $(STAMP)

.venv: $(STAMP)

test: $(STAMP)
	bash .ci/install-real.sh
	bash .ci/install-audio.sh
	$(VENV)/bin/python -m pytest -q

test-fast: $(STAMP)
	$(VENV)/bin/python -m pytest -q -m "not slow and not real"

# keyword spotting from the real Whisper tiny.en: data, extraction, table (see README)
demo: $(STAMP)
	bash .ci/install-real.sh
	bash .ci/install-audio.sh
	$(VENV)/bin/subnet demo --out demo-out

# the five experiments of docs/RESULTS.md: data, training runs, latency, reports (resumable)
results: $(STAMP)
	bash .ci/install-real.sh
	bash .ci/install-audio.sh
	$(VENV)/bin/python -m experiments --out results --reports docs/results

# docs/RESULTS.md "Robustness outside the training domain": extraction +- distillation / augmentation /
# prediction distillation, then the same at 4x the steps (--long)
robustness: $(STAMP)
	bash .ci/install-real.sh
	bash .ci/install-audio.sh
	$(VENV)/bin/python -m experiments.robustness --out results
	$(VENV)/bin/python -m experiments.robustness --out results --long

clean:
	rm -rf $(VENV) build *.egg-info python/*.egg-info
