#!/usr/bin/env bash
# Install Debian's chromium when it is absent, for the headless-browser test
# of the demo's report.html (tests/test_demo.py::test_html_report_in_chromium,
# driven by the playwright package of the dev extras; `playwright install` is
# never needed).
#
# Idempotent and quiet: prints one line, and always exits 0; where chromium
# cannot be installed (not root and no password-less sudo, no apt-get, no
# network) it says why and the test is skipped with its reason.
#
# Usage: tools/install_browser.sh
set -u
if command -v chromium >/dev/null 2>&1; then
    echo "install_browser: chromium is installed ($(command -v chromium))"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_browser: no apt-get here; install chromium yourself" \
        "(the browser test is skipped without it)"
    exit 0
fi
if [ "$(id -u)" = 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO=(sudo -n)
else
    echo "install_browser: not root: run 'sudo apt-get install" \
        "--no-install-recommends chromium' (the browser test is skipped" \
        "without it)"
    exit 0
fi
LOG="$(mktemp)"
install() {
    DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -q \
        --no-install-recommends chromium >>"$LOG" 2>&1
}
# a stale package list is the usual failure: update once, then retry
if install || { "${SUDO[@]}" apt-get update -q >>"$LOG" 2>&1 && install; }; then
    echo "install_browser: installed $(chromium --version 2>/dev/null)"
else
    echo "install_browser: apt-get could not install chromium" \
        "(the browser test is skipped without it); last lines of its log:"
    tail -n 3 "$LOG"
fi
rm -f "$LOG"
exit 0
