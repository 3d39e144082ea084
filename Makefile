# The two commands of the quick start: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONFIG ?= actor_server.toml
# The variable that holds the bot token (discord.token_env in $(CONFIG)); unset -> a dry run.
TOKEN_ENV ?= DISCORD_TOKEN

.PHONY: run sandbox test lint docs docs-serve bench clean clean-data

$(BIN)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "discord-actor needs Python 3.11 or newer (found " + sys.version.split()[0] + "); set PYTHON=python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $@

run: $(BIN)/.installed
	@echo "dashboard, API and /metrics: http://127.0.0.1:8750/ (actions: set DISCORD_ACTOR_HTTP_TOKEN)"
	$(BIN)/discord-actor run --config $(CONFIG) $(if $($(TOKEN_ENV)),,--dry-run)

# The bot against a fake Discord in the process, no token: type /remind in:10s text:stand up.
sandbox: $(BIN)/.installed
	$(BIN)/discord-actor sandbox --config $(CONFIG)

test: $(BIN)/.installed
	$(BIN)/pytest

# ruff, mypy, the import contracts in pyproject.toml ([tool.importlinter]): layers that
# depend one way, no cycle in any package; then the documentation site, warnings as errors.
lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/mypy discord_actor
	$(BIN)/lint-imports --no-logo
	$(MAKE) --no-print-directory docs

# The site in docs/ (Sphinx, Markdown pages, the API reference from the docstrings) into
# build/docs. -W --keep-going -n: every warning is an error, all reported in one pass, and a
# reference (a page, a heading anchor, a documented name) that does not resolve is a warning,
# so links cannot rot. No network: the build works offline.
docs: $(BIN)/.installed
	$(BIN)/sphinx-build -W --keep-going -n -q docs build/docs
	@echo "docs: build/docs/index.html"

# The site on http://127.0.0.1:8000/ (rebuild with `make docs`).
docs-serve: docs
	$(BIN)/python -m http.server --bind 127.0.0.1 --directory build/docs 8000

# The bench scripts' own dependencies (the "bench" extra), on top of the test install.
$(BIN)/.bench-installed: $(BIN)/.installed
	$(BIN)/pip install --quiet -e '.[test,bench]'
	@touch $@

bench: $(BIN)/.bench-installed
	$(BIN)/python bench/run_throughput.py
	$(BIN)/python bench/pool_vs_single.py
	$(BIN)/python bench/startup_many_actors.py
	$(BIN)/python bench/peers.py
	$(BIN)/python bench/keyed_schedules.py
	$(BIN)/python bench/http_scrape.py
	$(BIN)/python bench/failover.py

# Build output and tool caches only: the database under .discord_actor (every actor's state and all
# run history) stays; `make clean-data` deletes it.
clean:
	rm -rf $(VENV) build .pytest_cache .mypy_cache .ruff_cache .import_linter_cache

# The embedded PostgreSQL of the default data_dir, with every actor's state and all run history.
clean-data:
	@if [ -f .discord_actor/pgdata/postmaster.pid ]; then echo "a server is using .discord_actor/pgdata (postmaster.pid): stop 'discord-actor run' first (none running? then: rm -rf .discord_actor)" >&2; exit 2; fi
	@if [ -f .discord_actor/sandbox-pgdata/postmaster.pid ]; then echo "a sandbox is using .discord_actor/sandbox-pgdata (postmaster.pid): stop 'discord-actor sandbox' first (none running? then: rm -rf .discord_actor)" >&2; exit 2; fi
	@echo "deleting .discord_actor: the embedded PostgreSQL database, with every actor's state and all run history"
	rm -rf .discord_actor
