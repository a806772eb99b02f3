#!/usr/bin/env bash
# The whole test command from a fresh clone, as CI runs it: set up what is missing (a virtualenv,
# the locked packages, Debian's tools), then scripts/test.sh (lint, types, generated files, every
# test suite). Arguments go to pytest.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
source "$root/scripts/venv.sh"
bash "$root/scripts/setup.sh"
exec bash "$root/scripts/test.sh" "$@"
