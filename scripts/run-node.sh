#!/usr/bin/env bash
# Install accel-node into .venv and start a node in the foreground on embedded defaults.
# Extra arguments go to `accel-node run`'s parent command, e.g. `scripts/run-node.sh --home /tmp/n1`.
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
ensure_venv ""
exec "$VENV/bin/accel-node" "$@" run
