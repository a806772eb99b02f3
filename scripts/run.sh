#!/usr/bin/env bash
# The main job from a fresh clone, from any folder: set up what is missing (a virtualenv, the
# locked packages, Debian's tools), then the acceptance run, `bookgen verify`: the stack up, the
# load while books are written, the six targets. Arguments go to `bookgen verify` (e.g.
# --duration 2m); its reports land under ./reports/ of the folder it was started from.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
source "$root/scripts/venv.sh"
bash "$root/scripts/setup.sh"
exec bookgen verify --project "$root" "$@"
