#!/usr/bin/env bash
# Sourced by test.sh: browser_install makes sure Debian's chromium and chromium-driver are
# installed (the console's browser tests drive them through WebDriver), installing them
# with apt when missing, with a font so that screenshots show text. Installing needs root.

browser_install() {
    if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
        return 0
    fi
    echo "browser: chromium or chromedriver is missing; installing Debian's chromium and chromium-driver" >&2
    if [[ "$(id -u)" != 0 ]]; then
        echo "browser: installing chromium and chromium-driver needs root" >&2
        return 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >&2 || { echo "browser: apt-get update failed" >&2; return 1; }
    apt-get install -y -q --no-install-recommends chromium chromium-driver fonts-dejavu-core </dev/null >&2 \
        || { echo "browser: apt-get install chromium chromium-driver failed" >&2; return 1; }
}
