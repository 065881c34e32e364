#!/usr/bin/env bash
# Debian's Chromium for tests/test_browser.py (the real-browser test); `make test` calls this first.
# Never fails the build: where Chromium cannot be installed, that test skips and says why.
# Never runs `playwright install` (it downloads browsers): Playwright drives /usr/bin/chromium.
set -u
cd "$(dirname "$0")/.." || exit 0

# The Python package playwright comes with the project's `course` extra; this only reports on it.
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
    if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
if ! "$PY" -c "import playwright.sync_api" >/dev/null 2>&1; then
    echo "install_browser: $PY cannot import playwright (pip install -e '.[course]'): the real-browser test will be skipped"
fi

if [ -x /usr/bin/chromium ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "install_browser: not root / no apt-get: the real-browser test will be skipped (it needs /usr/bin/chromium)"
    exit 0
fi

echo "install_browser: apt-get install chromium ..."
log="$(mktemp)"
export DEBIAN_FRONTEND=noninteractive
if timeout 600 apt-get update -qq >"$log" 2>&1 && timeout 600 apt-get install -y -qq chromium >>"$log" 2>&1 \
        && [ -x /usr/bin/chromium ]; then
    echo "install_browser: $(/usr/bin/chromium --version 2>/dev/null || echo 'chromium installed')"
else
    tail -n 5 "$log"
    echo "install_browser: apt-get could not install chromium: the real-browser test will be skipped"
fi
rm -f "$log"
exit 0
