# `make run`: the broker's demo night on the embedded default (SQLite, eager Celery, local archive).
# `make test`: the test suite. Both create the virtual environment first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_DIR ?= var/demo_night
DEMO_OBJECTS ?= 300

.PHONY: run test venv migrate demo bench clean chromium serve services workers workers-stop flower

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements.txt
	touch $@

migrate: venv
	$(PY) manage.py migrate --noinput
	$(PY) manage.py collectstatic --noinput --verbosity 0

run: migrate
	$(PY) manage.py simulate_night $(DEMO_DIR) --objects $(DEMO_OBJECTS) --seed 1
	$(PY) manage.py load_catalog $(DEMO_DIR)/allwise_simulated.csv
	$(PY) manage.py ingest $(DEMO_DIR)
	@echo "Browse it: make serve, then http://127.0.0.1:8000/ (admin: manage.py createsuperuser)"

# The demo's web server: DEBUG on, explicitly, and only on loopback.
serve: migrate
	DJANGO_DEBUG=true DJANGO_ALLOWED_HOSTS=localhost,127.0.0.1 $(PY) manage.py runserver 127.0.0.1:8000

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
	$(PY) -m pytest -m farm_faults tests/integration/workflow/test_farm_faults.py

bench: migrate
	$(PY) manage.py bench ingest
	$(PY) manage.py bench features
	$(PY) manage.py bench stamps

# --- The worker farm on one host (docs/operating.md). Needs CELERY_BROKER_URL (and DATABASE_URL).
QUEUE_INGEST ?= $(or $(BROKER_QUEUE_INGEST),ingest)
QUEUE_IO ?= $(or $(BROKER_QUEUE_IO),io)
QUEUE_CPU ?= $(or $(BROKER_QUEUE_CPU),cpu)
QUEUE_GPU ?= $(or $(BROKER_QUEUE_GPU),gpu)
# Measured on 2 cores (docs/operating.md): cpu at 3 processes (cores + 1: the steps also wait
# for PostgreSQL on the same host); ingest+io waits on disk and network, 2; gpu 1. Prefetch 1 (settings).
CPU_CONCURRENCY ?= 3
IO_CONCURRENCY ?= 2
GPU_CONCURRENCY ?= 1
WORKERS := ingest_io cpu gpu
MULTI = $(VENV)/bin/celery -A broker_site multi
MULTI_FILES = --pidfile=var/run/%n.pid --logfile=var/log/%n%I.log

# Redis and PostgreSQL on loopback: checked, and started where installed but stopped.
services:
	@mkdir -p var/redis
	@if redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then echo "Redis: running on 127.0.0.1:6379"; \
	elif command -v redis-server >/dev/null; then \
	  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --dir $(CURDIR)/var/redis --appendonly yes --save "" \
	  && sleep 1 && redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null && echo "Redis: started on 127.0.0.1:6379 (append-only file in var/redis)"; \
	else echo "Redis is not installed: apt-get install redis-server"; exit 1; fi
	@if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then echo "PostgreSQL: running on 127.0.0.1:5432"; \
	elif command -v pg_ctlcluster >/dev/null && ls /etc/postgresql/ >/dev/null 2>&1; then \
	  pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql | sort -V | tail -1) main start \
	  && sleep 2 && pg_isready -q -h 127.0.0.1 -p 5432 && echo "PostgreSQL: started on 127.0.0.1:5432"; \
	else echo "PostgreSQL is not installed: apt-get install postgresql"; exit 1; fi
	@echo "export DATABASE_URL=postgres://postgres@127.0.0.1:5432/broker CELERY_BROKER_URL=redis://127.0.0.1:6379/0"

workers: migrate
	@test -n "$$CELERY_BROKER_URL" || { echo "set CELERY_BROKER_URL (and DATABASE_URL): see make services"; exit 1; }
	@mkdir -p var/run var/log
	$(MULTI) start $(WORKERS) $(MULTI_FILES) --loglevel=INFO \
	  -Q:ingest_io $(QUEUE_INGEST),$(QUEUE_IO) -c:ingest_io $(IO_CONCURRENCY) \
	  -Q:cpu $(QUEUE_CPU) -c:cpu $(CPU_CONCURRENCY) -Q:gpu $(QUEUE_GPU) -c:gpu $(GPU_CONCURRENCY)

workers-stop:
	$(MULTI) stopwait $(WORKERS) $(MULTI_FILES)

# Flower, to watch the workers and queues: http://127.0.0.1:5555/
flower: venv
	$(VENV)/bin/celery -A broker_site flower --address=127.0.0.1 --port=5555

clean:
	rm -rf var
