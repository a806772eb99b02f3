# Sourced by run.sh and check.sh: use the active virtualenv, else this checkout's .venv (made on
# first use), so a fresh clone needs nothing installed by hand but Python 3.11+.
if [ -z "${VIRTUAL_ENV:-}" ]; then
  venv="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.venv"
  [ -x "$venv/bin/python3" ] || python3 -m venv "$venv"
  # shellcheck disable=SC1091
  source "$venv/bin/activate"
fi
