"""What authenticating every bulk frame costs (issue 11: "authenticated frames always").

Every bulk frame now carries an AEAD tag; ``plain`` channels (public blocks) leave the payload in
the clear and authenticate it (AES-256-GCM with the payload as associated data, i.e. GMAC), and
``encrypted`` channels seal it. The issue's claim is that with AES-NI this costs less than the
SHA-256 the receiver runs anyway to verify a block against its CID. This measures, on one core,
in one run, over the same 256 KiB blocks (a UnixFS leaf):

- ``sha256``: hashlib over the block (the baseline: what verification already costs);
- ``gmac``, ``seal``: the primitives alone (AES-256-GCM tag over the block; AES-256-GCM encryption);
- ``plain_receive``, ``encrypted_receive``: :class:`p2p.bulk.framing.FrameDecoder` opening
  frames received through ``get_buffer``/``buffer_updated`` as a socket read would (the copy
  included), one block per frame: the receiver's work, next to its SHA-256;
- ``plain_both_ends``, ``encrypted_both_ends``: :class:`~p2p.bulk.framing.FrameEncoder` too.

Prints MiB/s per row and each row's ratio to ``sha256`` (and plain vs encrypted on the receiving
end); ``--json`` prints the figures as one JSON line.
Command: ``python -m scripts.bench.frame_auth [--mib 64] [--runs 5] [--json]``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from p2p.bulk.framing import AES_256_GCM, FrameDecoder, FrameEncoder
from scripts.bench.harness import MIB, log, machine_info, source_revision
from scripts.bench.stats import median

BLOCK = 256 * 1024


def _receive(decoder: FrameDecoder, buffers: list[bytes | bytearray | memoryview]) -> int:
    """Feed one frame's buffers as a socket read would (straight into the decoder's buffer)."""
    for buffer in buffers:
        view = memoryview(buffer).cast("B")
        while view:
            target = decoder.get_buffer()
            n = min(len(target), len(view))
            target[:n] = view[:n]
            decoder.buffer_updated(n)
            view = view[n:]
    item = decoder.next_view()
    if item is None:
        raise RuntimeError("a frame did not come out whole")
    return len(item[1])


def frames(block: bytes, count: int, *, encrypt: bool, send: bool) -> Callable[[], None]:
    """Both ends (``send``: encode, then receive) or the receiving end alone (frames encoded before)."""
    key = os.urandom(32)

    def codec() -> tuple[FrameEncoder, FrameDecoder]:
        return (
            FrameEncoder(cipher=AES_256_GCM, key=key, encrypt=encrypt, max_payload=1 << 20),
            FrameDecoder(cipher=AES_256_GCM, key=key, encrypt=encrypt, max_payload=1 << 20),
        )

    encoder, _ = codec()
    wire = [b"".join(bytes(b) for b in encoder.encode(3, block)) for _ in range(0 if send else count)]

    def run() -> None:
        encoder, decoder = codec()
        for i in range(count):
            buffers = encoder.encode(3, block) if send else [wire[i]]
            if _receive(decoder, buffers) != len(block):
                raise RuntimeError("a frame came out with the wrong size")

    return run


def measure(mib: int, runs: int) -> dict[str, Any]:
    block = os.urandom(BLOCK)
    count = max(1, mib * MIB // BLOCK)
    aead = AESGCM(os.urandom(32))
    nonce = bytes(12)

    def sha256() -> None:
        for _ in range(count):
            hashlib.sha256(block).digest()

    def gmac() -> None:
        for _ in range(count):
            aead.encrypt(nonce, b"", block)

    def seal() -> None:
        for _ in range(count):
            aead.encrypt(nonce, block, None)

    rows: dict[str, Callable[[], None]] = {
        "sha256": sha256,
        "gmac": gmac,
        "seal": seal,
        "plain_receive": frames(block, count, encrypt=False, send=False),
        "encrypted_receive": frames(block, count, encrypt=True, send=False),
        "plain_both_ends": frames(block, count, encrypt=False, send=True),
        "encrypted_both_ends": frames(block, count, encrypt=True, send=True),
    }
    times: dict[str, list[float]] = {name: [] for name in rows}
    for fn in rows.values():  # warm-up
        fn()
    for _ in range(runs):  # interleaved, so that load changes hit every row alike
        for name, fn in rows.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    size_mib = count * BLOCK / MIB
    rates = {name: size_mib / median(ts) for name, ts in times.items()}
    return {
        "source": source_revision(),
        "machine": machine_info(),
        "block_bytes": BLOCK,
        "mib": size_mib,
        "runs": runs,
        "mib_per_s": {k: round(v, 1) for k, v in rates.items()},
        "vs_sha256": {k: round(v / rates["sha256"], 2) for k, v in rates.items() if k != "sha256"},
        "plain_vs_encrypted_receive": round(rates["plain_receive"] / rates["encrypted_receive"], 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=64, help="MiB per row and run [64]")
    parser.add_argument("--runs", type=int, default=5, help="runs per row (median) [5]")
    parser.add_argument("--json", action="store_true", help="print the results as one JSON line")
    args = parser.parse_args(argv)
    log(f"frame authentication: {args.mib} MiB of 256 KiB blocks, {args.runs} runs")
    out = measure(args.mib, args.runs)
    for name, rate in out["mib_per_s"].items():
        ratio = out["vs_sha256"].get(name)
        suffix = f"  ({ratio:.2f}x sha256)" if ratio is not None else "  (baseline)"
        print(f"{name:18s} {rate:8.1f} MiB/s{suffix}")
    print(f"plain vs encrypted frames, receiving end: {out['plain_vs_encrypted_receive']:.2f}x")
    if args.json:
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
