#!/usr/bin/env bash
# Headless Chromium for the browser test (tests/test_book.py opens every built page in it).
# As root with apt (Debian/Ubuntu/CI) it installs Debian's `chromium`; otherwise it says how. Never fatal:
# without a browser the browser test reports itself skipped, with this command as the fix.
set -uo pipefail
find_browser() { command -v chromium || command -v chromium-browser || command -v google-chrome || true; }
if [ -n "$(find_browser)" ]; then
  echo "browser: $(find_browser)"
elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "browser: installing chromium with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq chromium >/dev/null 2>&1 \
    || { apt-get update -qq >/dev/null && apt-get install -y -qq chromium >/dev/null 2>&1; }
  [ -n "$(find_browser)" ] && echo "browser: installed $(find_browser)" || echo "browser: could not install chromium" >&2
else
  echo "browser: Chromium not found and cannot install it (not root or no apt-get); the browser test will be skipped." >&2
  echo "  Install it: sudo apt-get install chromium (Debian/Ubuntu), then run make test again." >&2
fi
exit 0
