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

from tests.daemons import Daemon

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
    assert a.api("POST", "/v1/peers/connect", json={"addr": b.addr}).status_code == 200
    assert c.api("POST", "/v1/peers/connect", json={"addr": b.addr}).status_code == 200

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
    assert c.api("GET", "/v1/models/" + str(v2["cid"])).status_code == 200
    assert (
        c.api("GET", "/v1/models/bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku").status_code
        == 404
    )
    assert c.api("POST", "/v1/models/fetch", json={"cid": "not-a-cid"}).status_code == 422


def test_expired_manifest_is_refused(start_daemon: Callable[..., Daemon], tmp_path: Path) -> None:
    a = start_daemon("a", ACCEL_NODE_MODELS_PUBLISH_TTL_DAYS="0.00003")  # ~2.6 s
    b = start_daemon("b")
    assert b.api("POST", "/v1/peers/connect", json={"addr": a.addr}).status_code == 200
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
    assert c.api("POST", "/v1/peers/connect", json={"addr": a.addr}).status_code == 200
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
    assert c.api("POST", "/v1/peers/connect", json={"addr": a.addr}).status_code == 200
    fetched = cli_json(c, "models", "fetch", cid)
    installed = Path(str(fetched["path"]))
    assert (installed / "vocab" / "tokens.bin").read_bytes() == (
        model_dir / "vocab" / "tokens.bin"
    ).read_bytes()
    assert stored_blocks() >= kept
