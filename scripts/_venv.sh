# Shared by run-node.sh and test.sh: create (once) the project's virtual environment in .venv and
# install the project into it with the given extras. Needs only python3 (>= 3.11) on the machine.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${ACCEL_NODE_VENV:-$REPO/.venv}"
PYTHON="${PYTHON:-python3}"

ensure_venv() {
    local extras="$1"
    if [ ! -x "$VENV/bin/python" ]; then
        echo "creating virtual environment in $VENV" >&2
        "$PYTHON" -m venv "$VENV"
        "$VENV/bin/python" -m pip install --quiet --upgrade pip
    fi
    local spec="$REPO"
    [ -n "$extras" ] && spec="$REPO[$extras]"
    echo "installing accel-node${extras:+ [$extras]} into $VENV" >&2
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e "$spec"
}
