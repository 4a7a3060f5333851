#!/usr/bin/env bash
# Install js-ipfs 0.66.1 (a real IPFS implementation that serves the /api/v0 RPC API) into
# tests/jsipfs/node_modules for the Kubo RPC backend tests (no Kubo binary is installable from the
# package registries the tests may use). npm runs only when node_modules is missing or package.json
# changed since the last install (a stamp in node_modules holds package.json's sha256).
# Needs Node.js >= 18 with npm. The first install takes a few minutes.
set -euo pipefail
DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/../tests/jsipfs" && pwd)"
STAMP="$DIR/node_modules/.accel-node-package-sha256"
want="$(sha256sum "$DIR/package.json" | cut -d' ' -f1)"
if [ -x "$DIR/node_modules/.bin/jsipfs" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
    exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
    echo "jsipfs.sh: npm not found; the Kubo RPC tests need Node.js >= 18 with npm to install js-ipfs" >&2
    exit 1
fi
echo "installing js-ipfs into $DIR (npm install)" >&2
(cd "$DIR" && npm install --no-audit --no-fund --loglevel=error)
echo "$want" > "$STAMP"
