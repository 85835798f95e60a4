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
PACKETS ?= 15000
FAMILY_PACKETS ?= 25000
TEST_FAMILY_PACKETS ?= 30000
TRAIN_SEED ?= 1
TRAIN_FAMILY_SEED ?= 3
TEST_SEED ?= 2
TEST_FAMILY_SEED ?= 4
DET_SHARE ?= 0.15
FAMILY_SHARE ?= 0.2
# the training and the test captures exfiltrate different files
TRAIN_FILES ?= report.txt photo-cat.png diagram.png customers.csv
TEST_FILES ?= firmware.bin photo-street.jpg chart.png
# ... in different variants of each family: training sees every alphabet and family (DET, the
# four modelled ones, the real iodine and dns2tcp captures), the test other label layouts,
# chunk sizes, query types and timing (`evaluate.py --leave-one-out`: whole families unseen)
TRAIN_DET_STYLES ?= det det-multilabel base32-txt base64-cname base128-null base36-short
TRAIN_FAMILY_STYLES ?= dnscat2-txt dnscat2-cname beacon-a beacon-txt dga-alpha dga-alnum \
	dnsexfiltrator-b64 dnsexfiltrator-raw8 dnsexfiltrator-b32lower
TEST_DET_STYLES ?= det-qtypes base64url-mx base32-burst
TEST_FAMILY_STYLES ?= dnscat2-mx dnscat2-tag beacon-aaaa dga-txt dnsexfiltrator-b32
# the shipped real-tool captures, in training (TEST_TOOLS=... holds one out: README)
CAPTURES := data_generating_codes/captures
TRAIN_TOOLS ?= $(CAPTURES)/iodine.pcap $(CAPTURES)/dns2tcp.pcap
TEST_TOOLS ?=
TRAIN_CAPTURES = $(WORK)/train-det.pcap $(WORK)/train-families.pcap $(TRAIN_TOOLS)
TEST_CAPTURES = $(WORK)/test-det.pcap $(WORK)/test-families.pcap $(TEST_TOOLS)
# odd-but-real benign traffic beside the hard classes, some of it behind a DNS 0x20 resolver
# (README: Generate); the shipped models also see sites outside the popular list
BENIGN ?= --share-ad-internal 0.015 --share-dns-sd 0.01 --share-telemetry 0.02 \
	--mixed-case 0.2 --wordy-many 0.5
MODELS_BENIGN ?= $(BENIGN) --share-long-tail 0.03
GENERATE = $(PY) data_generating_codes/script_datagen.py --mode offline

# the shipped models: every DET style and modelled family, plus the shipped real-tool captures
MODELS_PACKETS ?= 60000
MODELS_SEED ?= 11
REAL_TOOLS := $(CAPTURES)/iodine.pcap $(CAPTURES)/dns2tcp.pcap

.PHONY: demo test test-fast install lint bench clean models

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

demo: install
	$(GENERATE) $(BENIGN) --packets $(PACKETS) --seed $(TRAIN_SEED) --exfil-share $(DET_SHARE) \
		--styles $(TRAIN_DET_STYLES) --files $(TRAIN_FILES) --out $(WORK)/train-det.pcap
	$(GENERATE) $(BENIGN) --packets $(FAMILY_PACKETS) --seed $(TRAIN_FAMILY_SEED) --exfil-share $(FAMILY_SHARE) \
		--styles $(TRAIN_FAMILY_STYLES) --files $(TRAIN_FILES) --out $(WORK)/train-families.pcap
	$(GENERATE) $(BENIGN) --packets $(PACKETS) --seed $(TEST_SEED) --exfil-share $(DET_SHARE) \
		--styles $(TEST_DET_STYLES) --files $(TEST_FILES) --out $(WORK)/test-det.pcap
	$(GENERATE) $(BENIGN) --packets $(TEST_FAMILY_PACKETS) --seed $(TEST_FAMILY_SEED) --exfil-share $(FAMILY_SHARE) \
		--styles $(TEST_FAMILY_STYLES) --files $(TEST_FILES) --out $(WORK)/test-families.pcap
	$(PY) ld.py $(TRAIN_CAPTURES) --out $(WORK)/train
	$(PY) ng.py $(TRAIN_CAPTURES) --out $(WORK)/train
	$(PY) ld.py $(TEST_CAPTURES) --out $(WORK)/test
	$(PY) ng.py $(TEST_CAPTURES) --out $(WORK)/test
	$(PY) ld.py $(TEST_CAPTURES) --out $(WORK)/test-time --rule time
	$(PY) train_ae_clf.py --data $(WORK)/train
	$(PY) train_clf.py --data $(WORK)/train
	$(PY) train_lstm.py --data $(WORK)/train
	$(PY) evaluate.py --data $(WORK)/train --test $(WORK)/test \
		--time-labels $(WORK)/test-time/labels.npy
	$(PY) detect.py $(TEST_CAPTURES) --model checkpoints/clf.pt --out results/scores.csv; \
		code=$$?; [ $$code -le 1 ] || exit $$code
	@echo
	@sed -n '/^| model /,/^$$/p' results/report.md
	@echo "report: results/report.md   plots: results/*.png   alerts: results/alerts.json"

models: install
	$(GENERATE) $(MODELS_BENIGN) --packets $(MODELS_PACKETS) \
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
