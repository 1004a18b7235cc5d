# The two commands of the README. Both create .venv when it is missing.
PY := .venv/bin/python
VENV_STAMP := .venv/.installed

.PHONY: repro test install lint clean

$(VENV_STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(VENV_STAMP)

install: $(VENV_STAMP)

repro: $(VENV_STAMP)
	PATH="$(CURDIR)/.venv/bin:$$PATH" dvc repro

lint: $(VENV_STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

test: lint
	$(PY) -m pytest -q

clean:
	rm -rf .venv
