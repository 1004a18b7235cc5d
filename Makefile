# The two commands of the README. Both create .venv when it is missing.
PY := .venv/bin/python
VENV_STAMP := .venv/.installed

.PHONY: repro test install lint docs browser clean

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

# The documentation site (mkdocs.yml) into site/; --strict fails on a broken link or anchor.
# NO_MKDOCS_2_WARNING silences Material's end-of-life banner, which is no build warning.
docs: $(VENV_STAMP)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict

# The page tests (tests/test_annotate_browser.py) drive Debian's Chromium through its driver;
# nothing is downloaded at test time. Installed here when missing and this runs as root with
# apt-get; otherwise the test fails saying what to install. A no-op when both files exist.
CHROMIUM := /usr/bin/chromium
CHROMEDRIVER := /usr/bin/chromedriver

browser:
	@if [ -x $(CHROMIUM) ] && [ -x $(CHROMEDRIVER) ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing Debian's chromium and chromium-driver for the page tests"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    chromium chromium-driver >/dev/null) || \
	  echo "warning: apt-get could not install chromium chromium-driver: the page tests will fail"; \
	else \
	  echo "warning: $(CHROMIUM) or $(CHROMEDRIVER) missing: the page tests will fail;" \
	    "install them as root: apt-get install chromium chromium-driver"; \
	fi

test: lint browser
	$(PY) -m pytest -q

clean:
	rm -rf .venv
