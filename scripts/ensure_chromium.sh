#!/usr/bin/env bash
# Make sure Debian's Chromium and its chromedriver are installed for the browser test of
# `lvspec-report html` (tests/test_report_html.py). Idempotent: does nothing when both exist.
# As root (or with password-less sudo) it installs them with apt-get; otherwise, or when
# apt-get fails, it says what to run and exits 0 so that `make test` still runs: the browser
# test then FAILS with the same advice.
set -u
CHROMIUM="${LVSPEC_CHROMIUM:-/usr/bin/chromium}"
DRIVER="${LVSPEC_CHROMEDRIVER:-/usr/bin/chromedriver}"
if [ -x "$CHROMIUM" ] && [ -x "$DRIVER" ]; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else SUDO="none"; fi
fi
if [ "$SUDO" != "none" ] && command -v apt-get >/dev/null 2>&1; then
  echo "ensure_chromium: installing chromium and chromium-driver (Debian packages) for the browser test" >&2
  install() { $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null 2>&1; }
  if install || { $SUDO apt-get update -q >/dev/null 2>&1 && install; }; then
    exit 0
  fi
  echo "ensure_chromium: apt-get could not install chromium chromium-driver" >&2
fi
echo "ensure_chromium: $CHROMIUM or $DRIVER is missing; install them with" >&2
echo "  sudo apt-get install -y chromium chromium-driver" >&2
echo "(the browser test of lvspec-report html fails until then)" >&2
exit 0
