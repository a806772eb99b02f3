#!/usr/bin/env bash
# The whole check, as CI runs it: lint, format, types, generated files, then every test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1

step() { printf '\n== %s\n' "$*"; }

step "ruff check";            ruff check .
step "ruff format --check";   ruff format --check .
step "mypy (strict)";         mypy
# Test folders repeat module names (conftest.py), so each is checked as its own tree.
step "mypy tests, scripts, loadtests"
(cd tests && mypy --strict test_architecture.py && for d in */; do mypy --strict "$d"; done)
mypy --strict scripts/*.py
(cd loadtests && mypy --strict .)
step "bookgen slo check";     bookgen slo check
step "bookgen deploy check";  bookgen deploy check
step "pytest";                python3 -m pytest "$@"
