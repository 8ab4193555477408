#!/usr/bin/env bash
# Installs what clickflow needs on Debian 12 and is not there yet (run as root).
#   deploy/install-deps.sh          build and run dependencies
#   deploy/install-deps.sh --test   also what the test suites need
#                                   (python3, node + npm, Debian's chromium,
#                                   and the benchmark baselines for the smoke run)
#   deploy/install-deps.sh --bench  build deps + the benchmark baselines
#                                   (wrk, nginx-light, goaccess, python3;
#                                   gnuplot-nox for the latency plots)
# Idempotent: packages already installed are skipped, `apt-get update` runs
# only when something is missing, and npm packages come from lock files.
set -euo pipefail
cd "$(dirname "$0")/.."

want=(gcc libc6-dev meson ninja-build pkg-config
      libmicrohttpd-dev libwebsockets-dev libcjson-dev libcmocka-dev
      libyaml-dev libpcre2-dev uap-core libsqlite3-dev libpq-dev libmaxminddb-dev)
with_tests=0
[ "${1:-}" = "--test" ] && with_tests=1
if [ "$with_tests" = 1 ]; then
  want+=(python3 chromium postgresql)
  command -v npm >/dev/null 2>&1 || want+=(nodejs npm)
fi
if [ "$with_tests" = 1 ] || [ "${1:-}" = "--bench" ]; then
  want+=(python3 wrk nginx-light goaccess gnuplot-nox)
fi

missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Front-end packages (charting library for the dashboard; playwright-core for
# the browser tests; the real Segment, Umami and Plausible clients for the
# compatible-endpoint tests), pinned by package-lock.json files.
for dir in web tests/browser tests/compat; do
  if [ -f "$dir/package-lock.json" ] && { [ "$dir" = web ] || [ "$with_tests" = 1 ]; }; then
    if [ ! -d "$dir/node_modules" ] || [ "$dir/package-lock.json" -nt "$dir/node_modules/.package-lock.json" ]; then
      if ! command -v npm >/dev/null 2>&1; then
        apt-get update -qq && apt-get install -y -qq --no-install-recommends nodejs npm
      fi
      (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
    fi
  fi
done
