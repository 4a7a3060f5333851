"""Publishing and fetching signed models between daemons (separate processes) over Bitswap."""

from __future__ import annotations

import json
import random
import signal
import time
from collections.abc import Callable
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from tests.support.daemons import Daemon, api_error

pytestmark = pytest.mark.multinode


def write_model(directory: Path, *, scale: float = 2.0, extra_bytes: int = 600_000) -> Path:
    """A small real ONNX model (y = x * scale) plus a multi-block side file."""
    directory.mkdir(parents=True, exist_ok=True)
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "s"], ["y"])],
        "scale",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor("s", TensorProto.FLOAT, [1], [scale])],
    )
    onnx.save(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(directory / "model.onnx")
    )
    (directory / "vocab").mkdir(exist_ok=True)
    # Random bytes: repeated content would deduplicate into a handful of blocks.
    (directory / "vocab" / "tokens.bin").write_bytes(random.Random(extra_bytes).randbytes(extra_bytes))
    return directory


def cli_json(node: Daemon, *args: str) -> dict[str, object]:
    result = node.cli(*args, "--json", timeout=120)
    assert result.returncode == 0, (args, result.stderr)
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def test_publish_on_a_fetch_on_c_through_b(start_daemon: Callable[..., Daemon], tmp_path: Path) -> None:
    a, b, c = (start_daemon(n, wait=False) for n in "abc")
    for node in (a, b, c):
        node.wait_ready()
    a.api.peers.connect(b.addr)
    c.api.peers.connect(b.addr)

    public_key = a.cli("keys", "new", "acme").stdout.strip()
    assert c.cli("trust", "add", public_key, "--name", "acme").returncode == 0

    published = cli_json(a, "models", "publish", str(write_model(tmp_path / "mlp")), "--key", "acme")
    cid = str(published["cid"])
    assert cid.startswith("baf") and published["version"] == 1 and published["local"] is True
    manifest = published["manifest"]
    assert isinstance(manifest, dict) and manifest["entry"] == "model.onnx"
    assert manifest["io"]["inputs"] == [{"name": "x", "dtype": "float32", "shape": ["batch", 4]}]

    # b does not trust acme: it refuses the model, with the reason, and installs nothing.
    refused = b.cli("models", "fetch", cid)
    assert refused.returncode == 1 and "unknown publisher" in refused.stderr
    assert json.loads(b.cli("models", "ls", "--json").stdout)["models"] == []

    # c was connected to b only; it finds a as a provider through the DHT (whose lookups may also
    # have connected it to a by now, as Kademlia walks do) and fetches over Bitswap.
    fetched = cli_json(c, "models", "fetch", cid)
    assert fetched["cid"] == cid and fetched["local"] is False
    installed = Path(str(fetched["path"]))
    assert (installed / "model.onnx").read_bytes() == (tmp_path / "mlp" / "model.onnx").read_bytes()
    assert (installed / "vocab" / "tokens.bin").read_bytes() == (
        tmp_path / "mlp" / "vocab" / "tokens.bin"
    ).read_bytes()
    assert [m["cid"] for m in cli_json(c, "models", "ls")["models"]] == [cid]  # type: ignore[index]
    assert cli_json(c, "models", "show", cid)["name"] == "mlp"

    # A newer version is accepted; going back to the older one afterwards is a rollback.
    v2 = cli_json(a, "models", "publish", str(write_model(tmp_path / "mlp", scale=3.0)), "--key", "acme")
    assert v2["version"] == 2
    assert cli_json(c, "models", "fetch", str(v2["cid"]))["version"] == 2
    removed = c.cli("models", "rm", cid)
    assert removed.returncode == 0, removed.stderr
    assert not installed.exists()
    rollback = c.cli("models", "fetch", cid)
    assert rollback.returncode == 1 and "older than version 2" in rollback.stderr

    # Unknown CIDs and malformed ones are clear errors.
    assert c.api.models.show(str(v2["cid"])).cid == v2["cid"]
    unknown = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
    assert api_error(lambda: c.api.models.show(unknown)).http_status == 404
    malformed = api_error(lambda: c.api.models.fetch("not-a-cid"))
    assert (malformed.http_status, malformed.error_code) == (422, "invalid_cid")


def test_expired_manifest_is_refused(start_daemon: Callable[..., Daemon], tmp_path: Path) -> None:
    a = start_daemon("a", ACCEL_NODE_MODELS_PUBLISH_TTL_DAYS="0.00003")  # ~2.6 s
    b = start_daemon("b")
    b.api.peers.connect(a.addr)
    public_key = a.cli("keys", "new", "acme").stdout.strip()
    assert b.cli("trust", "add", public_key, "--name", "acme").returncode == 0
    cid = str(
        cli_json(a, "models", "publish", str(write_model(tmp_path / "m", extra_bytes=1000)), "--key", "acme")[
            "cid"
        ]
    )
    time.sleep(3)
    refused = b.cli("models", "fetch", cid)
    assert refused.returncode == 1 and "expired" in refused.stderr
    assert json.loads(b.cli("models", "ls", "--json").stdout)["models"] == []


def test_fetch_resumes_after_kill_9(start_daemon: Callable[..., Daemon], tmp_path: Path) -> None:
    import threading

    a = start_daemon("a")
    c = start_daemon("c")
    c.api.peers.connect(a.addr)
    public_key = a.cli("keys", "new", "acme").stdout.strip()
    assert c.cli("trust", "add", public_key, "--name", "acme").returncode == 0
    model_dir = write_model(tmp_path / "big", extra_bytes=48 * 1024 * 1024)
    cid = str(cli_json(a, "models", "publish", str(model_dir), "--key", "acme")["cid"])

    def stored_blocks() -> int:
        return sum(1 for p in (c.home / "ipfs" / "blocks").rglob("*") if p.is_file())

    threading.Thread(target=lambda: c.cli("models", "fetch", cid, timeout=120), daemon=True).start()
    deadline = time.monotonic() + 60
    while stored_blocks() < 20 and time.monotonic() < deadline:
        time.sleep(0.02)
    c.stop(signal.SIGKILL)  # mid-fetch
    kept = stored_blocks()
    assert 20 <= kept < 190, kept  # the file has ~193 blocks: some, not all, were stored

    c.start().wait_ready()
    c.api.peers.connect(a.addr)
    fetched = cli_json(c, "models", "fetch", cid)
    installed = Path(str(fetched["path"]))
    assert (installed / "vocab" / "tokens.bin").read_bytes() == (
        model_dir / "vocab" / "tokens.bin"
    ).read_bytes()
    assert stored_blocks() >= kept


def test_fetch_progress_is_reported_while_it_runs(
    start_daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    import threading

    a = start_daemon("a", wait=False)
    b = start_daemon("b", wait=False)
    a.wait_ready()
    b.wait_ready()
    b.api.peers.connect(a.addr)
    public_key = a.cli("keys", "new", "acme").stdout.strip()
    assert b.cli("trust", "add", public_key, "--name", "acme").returncode == 0
    model_dir = write_model(tmp_path / "big", extra_bytes=24 * 1024 * 1024)
    published = cli_json(a, "models", "publish", str(model_dir), "--key", "acme")
    cid = str(published["cid"])
    total = sum(f["size"] for f in published["manifest"]["files"])  # type: ignore[index]

    outcome: dict[str, object] = {}
    finished = threading.Event()

    def fetch() -> None:  # the CLI with its progress bar (polling the same endpoint)
        outcome["result"] = b.cli("models", "fetch", cid, timeout=120)
        finished.set()

    threading.Thread(target=fetch, daemon=True).start()
    seen: list[dict[str, object]] = []
    with b.client(30) as api:
        while not finished.is_set():
            seen += [p.model_dump() for p in api.models.fetches().fetches if p.cid == cid]
            time.sleep(0.02)
        final = api.models.fetch_progress(cid).model_dump()
        assert api.models.fetches().fetches == []
        never = str(published["cid"])[:-2] + "aa"
        assert api_error(lambda: api.models.fetch_progress(never)).http_status in (404, 422)
        malformed = api_error(lambda: api.models.fetch_progress("not-a-cid"))
        assert (malformed.http_status, malformed.error_code) == (422, "invalid_cid")
    result = outcome["result"]
    assert result.returncode == 0, result.stderr  # type: ignore[attr-defined]
    assert cid in result.stdout  # type: ignore[attr-defined]

    # Finished: every byte of every file, and exactly the blocks b lacked (the manifest, the model,
    # 96 leaves of 256 KiB and their parent).
    assert final["phase"] == "done" and final["running"] is False and final["error"] is None
    assert final["bytes_done"] == final["bytes_total"] == total
    assert final["blocks_done"] == 1 + 1 + 96 + 1
    # While it ran (the providers look-up alone takes a while, so some snapshots are seen): the
    # total is the files' size once known, and the bytes only grow, within it.
    assert seen, "no in-progress snapshot observed"
    assert all(p["running"] for p in seen)
    done = [int(p["bytes_done"]) for p in seen]  # type: ignore[call-overload]
    assert done == sorted(done)
    for p in seen:
        if p["bytes_total"] is not None:
            assert p["bytes_total"] == total and 0 <= int(p["bytes_done"]) <= total  # type: ignore[call-overload]
        if p["phase"] in ("verifying", "installing"):  # every block is in: every byte is done
            assert p["bytes_done"] == total


def test_progress_counts_bytes_already_stored(tmp_path: Path) -> None:
    """A resumed fetch starts at the bytes it already has; the end is exactly the file's size."""
    from accel_node.models.progress import FetchProgress, file_bytes, present_bytes
    from p2p.content import CID, BlockStore, import_bytes

    data = random.Random(5).randbytes(3 * 1024 * 1024 + 5)
    result, blocks = import_bytes(data)
    store = BlockStore(tmp_path / "ipfs", max_bytes=1 << 30, fsync=False)
    assert present_bytes(store, result.root, len(data)) == 0
    store.put(result.root, blocks[result.root])
    leaves = [cid for cid in blocks if cid != result.root]
    for cid in leaves[:5]:
        store.put(cid, blocks[cid])
    assert present_bytes(store, result.root, len(data)) == 5 * 256 * 1024

    progress = FetchProgress(str(result.root))
    assert progress.bytes_total is None
    progress.start_files([len(data)], [present_bytes(store, result.root, len(data))])
    progress.begin_file(0)
    assert progress.bytes_done == 5 * 256 * 1024
    assert progress.snapshot()["bytes_total"] == len(data)
    for cid in leaves[5:7]:
        progress.block_stored(file_bytes(cid, blocks[cid]))
    assert progress.bytes_done == 7 * 256 * 1024 and progress.blocks_done == 2
    assert file_bytes(result.root, blocks[result.root]) == 0  # an internal node carries no file bytes
    progress.file_done(0)
    progress.finish()
    snapshot = progress.snapshot()
    assert snapshot["bytes_done"] == snapshot["bytes_total"] == len(data) and snapshot["phase"] == "done"
    assert CID.parse(snapshot["cid"]) == result.root
