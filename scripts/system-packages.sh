#!/bin/sh
# The servers the test suite starts on 127.0.0.1 (PostgreSQL, Mosquitto, Chromium and a font), installed from
# Debian's packages when they are missing, so a fresh machine runs every test rather than a skipped subset.
# Run as root (CI and the development machines are); nothing happens when everything is present.
set -eu
missing=""
have() { command -v "$1" >/dev/null 2>&1 || [ -n "$(ls $2 2>/dev/null)" ]; }
have initdb "/usr/lib/postgresql/*/bin/initdb" || missing="$missing postgresql"
have mosquitto "/usr/sbin/mosquitto" || missing="$missing mosquitto"
have chromium "/usr/bin/chromium" || missing="$missing chromium"
# The browser tests (Playwright driving the system's Chromium, headless) need a font to lay pages out.
have fc-list "/usr/bin/fc-list" && [ -n "$(fc-list 2>/dev/null | head -n 1)" ] || missing="$missing fontconfig fonts-dejavu-core"
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "system-packages: missing$missing; install them as root: apt-get install$missing" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# shellcheck disable=SC2086
apt-get install -y -q --no-install-recommends $missing
