#!/usr/bin/env bash
# Make sure Debian's chromium is installed (the web chat page's browser test drives it with
# Playwright at /usr/bin/chromium; no browser is downloaded). Used by `make test-main`.
set -euo pipefail
command -v chromium >/dev/null && exit 0
echo "chromium not found: installing it from the system packages" >&2
sudo_cmd=""; [[ "$(id -u)" -ne 0 ]] && sudo_cmd="sudo"
$sudo_cmd apt-get update -qq && $sudo_cmd apt-get install -y -qq chromium >/dev/null
