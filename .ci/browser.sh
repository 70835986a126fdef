#!/usr/bin/env bash
# System packages of the browser test (tests/test_ui_browser.py): Debian's Chromium and its WebDriver.
# Installed only when missing, so a machine that has them pays nothing; needs root (CI runs as root).
set -euo pipefail
if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "browser.sh: chromium/chromedriver missing and not root; the browser test will skip" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium chromium-driver fonts-dejavu-core >/dev/null
echo "browser.sh: installed $(dpkg-query -W -f='${Version}' chromium 2>/dev/null)"
