#!/usr/bin/env bash
# One-step setup: the bookgen package with its extras, and (where apt-get is available and they are
# missing) Debian's prometheus, prometheus-alertmanager, wrk and chromium, which `bookgen up`, the
# end-to-end tests and the overhead benchmark use, and the Redis and PostgreSQL exporters and
# celery-exporter that `bookgen up --engine celery` starts.
set -euo pipefail
cd "$(dirname "$0")/.."

# The packages pinned with their hashes in requirements.lock (refresh: bash scripts/lock.sh), then
# bookgen itself from this checkout; skipped when this Python already has exactly that.
want="$(cat requirements.lock pyproject.toml | sha256sum | cut -d' ' -f1) $PWD"
stamp="$(python3 -c 'import sys; print(sys.prefix)')/.bookgen-setup"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  pip=(python3 -m pip install --quiet --disable-pip-version-check)
  "${pip[@]}" --require-hashes -r requirements.lock
  "${pip[@]}" --no-deps --no-build-isolation -e .
  echo "$want" >"$stamp"
fi

need=()
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
command -v prometheus-alertmanager >/dev/null 2>&1 || need+=(prometheus-alertmanager)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v chromium >/dev/null 2>&1 || need+=(chromium)  # the HTML report's screenshot test
command -v prometheus-redis-exporter >/dev/null 2>&1 || need+=(prometheus-redis-exporter)
command -v prometheus-postgres-exporter >/dev/null 2>&1 || need+=(prometheus-postgres-exporter)
if ((${#need[@]})); then
  if command -v apt-get >/dev/null 2>&1; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "installing Debian packages: ${need[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  else
    echo "note: apt-get not found; install ${need[*]} yourself for 'bookgen up' and the e2e tests" >&2
  fi
fi
# celery-exporter (PyPI prometheus-exporter-celery) pins redis<6 and prometheus-client<0.22 and
# installs a top-level package named `src`, so it cannot share bookgen's environment (celery[redis]
# >=5.6 needs redis>=6): it gets a virtualenv of its own, with the last kombu that takes redis 5,
# and a `celery-exporter` script (the package ships none) where `bookgen up` looks for it.
exporter_venv="$HOME/.local/share/bookgen/celery-exporter"
if [ ! -x "$exporter_venv/bin/celery-exporter" ]; then
  echo "installing celery-exporter into $exporter_venv"
  python3 -m venv "$exporter_venv"
  "$exporter_venv/bin/pip" install --quiet --disable-pip-version-check \
    "prometheus-exporter-celery>=0.11.2" "celery>=5.6,<5.7" "kombu>=5.6,<5.7" packaging
  printf '#!%s\nimport sys\n\nfrom src.cli import cli\n\nsys.exit(cli())\n' \
    "$exporter_venv/bin/python" >"$exporter_venv/bin/celery-exporter"
  chmod +x "$exporter_venv/bin/celery-exporter"
fi

echo "bookgen $(python3 -c 'import bookgen; print(bookgen.__version__)') installed; try: bookgen verify"
