# The README's commands. Each runs bin/setup first, so a fresh machine needs nothing else.
SHELL := /bin/bash
export PATH := $(CURDIR)/.venv/bin:$(PATH)
DEV_REDIS_PORT ?= 6380
FLOWER_PORT ?= 5555
WEB_PORT ?= 3000
MAILCATCHER_PORT ?= 1025

.PHONY: dev test lint bench setup

setup:
	@bin/setup

## make dev: Redis (private, data in tmp/), a worker, Flower, the mail catcher and the web app
dev: setup
	@echo "jobkit dev stack (Ctrl-C stops all):"
	@echo "  web app, mail previews and inbox  http://localhost:$(WEB_PORT)/"
	@echo "  Flower                            http://localhost:$(FLOWER_PORT)/"
	@echo "  Redis                             redis://127.0.0.1:$(DEV_REDIS_PORT)/0"
	@echo "  SMTP catcher                      smtp://127.0.0.1:$(MAILCATCHER_PORT)"
	REDIS_URL=redis://127.0.0.1:$(DEV_REDIS_PORT)/0 DEV_REDIS_PORT=$(DEV_REDIS_PORT) \
	  SMTP_URL=smtp://127.0.0.1:$(MAILCATCHER_PORT) MAILCATCHER_PORT=$(MAILCATCHER_PORT) \
	  FLOWER_PORT=$(FLOWER_PORT) WEB_PORT=$(WEB_PORT) honcho start -f Procfile.dev

## make test: the whole suite against a private redis-server and real workers, on two
## processes (pytest-xdist; each has its own Redis, session worker and SMTP server)
test:
	@bin/setup test
	python -m pytest -n 2

## make lint: ruff, and pyright (basic) on jobkit/ and the sample user module in tests/typing/
lint: setup
	ruff check .
	pyright

## make bench: jobkit vs raw Celery (enqueue, processing, delayed jobs), raw aiosmtplib (mail),
## each control (unique, debounce, concurrency, limiter) vs a plain job, and the asyncio pool
## vs threads for I/O-bound jobs
bench: setup
	python bench/enqueue_perform.py
	python bench/scheduled.py
	python bench/mail.py
	python bench/controls.py
	python bench/async_pool.py
