#!/usr/bin/env bash
# The monitoring checks' real tools (tests/test_metrics.py, tests/test_dashboard.py): promtool
# and a Prometheus server, headless Chromium and its driver, from Debian's packages; only what
# is missing, and only where this runs as root with apt-get (otherwise those tests skip, or
# fail under CI=true). selenium and schemathesis come from PyPI (scripts/test.sh).
set -euo pipefail
missing=""
for tool in prometheus:prometheus promtool:prometheus chromium:chromium chromedriver:chromium-driver; do
  command -v "${tool%%:*}" >/dev/null || missing="$missing ${tool#*:}"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "install-monitoring-tools.sh: missing$missing (not root, or no apt-get): their tests skip" >&2
  exit 0
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
