#!/usr/bin/env bash
# The README's run command: install what is missing (Debian 12, as root),
# build a release binary in build-release/ and start clickflow with its
# embedded defaults. Extra arguments go to clickflow (see --help).
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/install-deps.sh
[ -f build-release/build.ninja ] || meson setup build-release --buildtype=release -Dtests=false >/dev/null
meson compile -C build-release >/dev/null
exec build-release/server/clickflow "$@"
