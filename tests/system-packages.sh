#!/usr/bin/env bash
# The Debian packages the tests drive as real peers, installed when missing, so that
# `make test` on a fresh machine runs every test with none skipped:
#   chromium - the dashboard's browser tests (Playwright drives it; it never downloads one)
#   prometheus-alertmanager - its amtool: driven against tocsin's API v2, and the
#     Alertmanager import's differential test
#   prometheus - a real Prometheus whose always-firing rule is sent to tocsin's
#     POST /api/v2/alerts (tests/api/test_prometheus.py)
set -euo pipefail

missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v amtool >/dev/null || missing+=(prometheus-alertmanager)
command -v prometheus >/dev/null || missing+=(prometheus)

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
echo "installing Debian packages for the tests: ${missing[*]}"
$sudo apt-get update -qq
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
