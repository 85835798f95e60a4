# The two commands of the README:
#   make demo   install into .venv, then run the whole pipeline on the embedded default
#   make test   install into .venv, then run the test suite (what .ci/run calls)
#   make test-fast   the same without the end-to-end tests marked slow
#   make models  retrain the shipped checkpoints in pretrained/ (detect.py's default model)
# Sizes and seeds below can be overridden: `make demo PACKETS=100000`.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
WORK ?= work
PACKETS ?= 30000
TRAIN_SEED ?= 1
TEST_SEED ?= 2
# the training and the test capture exfiltrate different files
TRAIN_FILES ?= report.txt photo-cat.png diagram.png customers.csv
TEST_FILES ?= firmware.bin photo-street.jpg chart.png

# the shipped models: every DET style and modelled family, plus the shipped real-tool captures
MODELS_PACKETS ?= 60000
MODELS_SEED ?= 11
REAL_TOOLS := data_generating_codes/captures/iodine.pcap data_generating_codes/captures/dns2tcp.pcap

.PHONY: demo test test-fast install lint bench clean models

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

demo: install
	$(PY) data_generating_codes/script_datagen.py --mode offline --packets $(PACKETS) \
		--seed $(TRAIN_SEED) --files $(TRAIN_FILES) --out $(WORK)/train.pcap
	$(PY) data_generating_codes/script_datagen.py --mode offline --packets $(PACKETS) \
		--seed $(TEST_SEED) --files $(TEST_FILES) --out $(WORK)/test.pcap
	$(PY) ld.py $(WORK)/train.pcap --out $(WORK)/train
	$(PY) ng.py $(WORK)/train.pcap --out $(WORK)/train
	$(PY) ld.py $(WORK)/test.pcap --out $(WORK)/test
	$(PY) ng.py $(WORK)/test.pcap --out $(WORK)/test
	$(PY) ld.py $(WORK)/test.pcap --out $(WORK)/test-time --rule time
	$(PY) train_ae_clf.py
	$(PY) train_clf.py
	$(PY) train_lstm.py
	$(PY) evaluate.py
	$(PY) detect.py $(WORK)/test.pcap --model checkpoints/clf.pt --out results/scores.csv; \
		code=$$?; [ $$code -le 1 ] || exit $$code
	@echo
	@sed -n '/^| model /,/^$$/p' results/report.md
	@echo "report: results/report.md   plots: results/*.png   alerts: results/alerts.json"

models: install
	$(PY) data_generating_codes/script_datagen.py --mode offline --packets $(MODELS_PACKETS) \
		--seed $(MODELS_SEED) --exfil-share 0.2 --styles all all-families --files $(TRAIN_FILES) \
		--out $(WORK)/models.pcap
	$(PY) ld.py $(WORK)/models.pcap $(REAL_TOOLS) --out $(WORK)/models
	$(PY) ng.py $(WORK)/models.pcap $(REAL_TOOLS) --out $(WORK)/models
	$(PY) train_clf.py --data $(WORK)/models --out pretrained/clf.pt
	$(PY) train_ae_clf.py --data $(WORK)/models --out pretrained/ae_clf.pt
	$(PY) train_lstm.py --data $(WORK)/models --out pretrained/lstm.pt

# two workers: one builds the trained pipeline and runs what needs it, the other the rest
test: install
	$(PY) -m pytest -q -n 2 --dist loadgroup

test-fast: install
	$(PY) -m pytest -q -n 2 --dist loadgroup -m "not slow"

lint: install
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

bench: install
	$(PY) bench/bench_features.py
	$(PY) bench/bench_models.py
	$(PY) bench/bench_detect.py

clean:
	rm -rf $(WORK) checkpoints results
