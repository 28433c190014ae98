#!/bin/sh
# Installs Eclipse Tahu's Sparkplug client (npm) into $1, for tests/test_sparkplug.py.
# Used by `make sparkplug-client` and by the test itself when the folder has no install yet.
set -eu
dir="$1"
here="$(cd "$(dirname "$0")" && pwd)"
mkdir -p "$dir"
cp "$here/package.json" "$here/edge.js" "$dir/"
cd "$dir"
npm install --no-audit --no-fund --no-package-lock --silent
