#!/usr/bin/env bash
# One-step setup: the bookgen package with its extras, and (where apt-get is available and they are
# missing) Debian's prometheus, prometheus-alertmanager and wrk, which `bookgen up`, the
# end-to-end tests and the overhead benchmark use.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m pip install --quiet --disable-pip-version-check -e ".[dev,tools]"

need=()
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
command -v prometheus-alertmanager >/dev/null 2>&1 || need+=(prometheus-alertmanager)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
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
echo "bookgen $(python3 -c 'import bookgen; print(bookgen.__version__)') installed; try: bookgen verify"
