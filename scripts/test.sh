#!/usr/bin/env bash
# Install accel-node with its test dependencies into .venv, then run the whole check suite:
# lint (ruff), format check, types (mypy --strict on accel_node and p2p) and every test (pytest).
# The Kubo RPC tests need js-ipfs, which scripts/jsipfs.sh installs with npm (once).
# Extra arguments go to pytest, e.g. `scripts/test.sh -k config`.
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
ensure_venv "test"
cd "$REPO"
echo "== ruff" >&2
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .
echo "== mypy" >&2
"$VENV/bin/mypy"
echo "== js-ipfs (a real IPFS RPC server for the Kubo backend tests)" >&2
"$REPO/scripts/jsipfs.sh" || echo "warning: js-ipfs could not be installed; the Kubo RPC tests will fail" >&2
echo "== pytest" >&2
exec "$VENV/bin/python" -m pytest "$@"
