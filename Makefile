# `make run`: the broker's demo night on the embedded default (SQLite, eager Celery, local archive).
# `make test`: the test suite. Both create the virtual environment first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_DIR ?= var/demo_night
DEMO_OBJECTS ?= 300

.PHONY: run test venv migrate demo bench clean chromium

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements.txt
	touch $@

migrate: venv
	$(PY) manage.py migrate --noinput

run: migrate
	$(PY) manage.py simulate_night $(DEMO_DIR) --objects $(DEMO_OBJECTS) --seed 1
	$(PY) manage.py load_catalog $(DEMO_DIR)/allwise_simulated.csv
	$(PY) manage.py ingest $(DEMO_DIR)
	@echo "Browse it: $(PY) manage.py runserver, then http://127.0.0.1:8000/ (admin: manage.py createsuperuser)"

# Headless Chromium for the dashboard's browser test (Debian package); skipped with the reason where absent.
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { SUDO=$$( [ "$$(id -u)" = 0 ] || echo "sudo -n" ); \
	    ($$SUDO apt-get install -y -q chromium >/dev/null 2>&1 || \
	     ($$SUDO apt-get update -q >/dev/null 2>&1 && $$SUDO apt-get install -y -q chromium >/dev/null 2>&1)) \
	    || echo "chromium could not be installed: the browser test will be skipped"; }

test: venv chromium
	$(PY) -m pytest
	$(PY) -m tests.integration.on_postgres

bench: migrate
	$(PY) manage.py bench ingest
	$(PY) manage.py bench features
	$(PY) manage.py bench stamps

clean:
	rm -rf var
