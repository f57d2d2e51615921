#!/usr/bin/env bash
# Installs haproxy (Debian's package) for the soak behind a load balancer, if it is missing
# and this runs as root; otherwise says so (that soak then skips, except under CI=true).
set -euo pipefail
if command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ]; then exit 0; fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "install-haproxy.sh: apt-get install haproxy"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy >/dev/null
else
  echo "install-haproxy.sh: haproxy is missing (apt-get install haproxy as root)" >&2
fi
