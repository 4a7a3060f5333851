"""The benchmarks: one short module per benchmark on a shared harness.

Run each one from the repository root as a module, with the project's virtual environment::

    python -m scripts.bench.node [--json]        # idle RSS and control-API latency
    python -m scripts.bench.profile [--json]     # the quick hardware profile vs independent checks
    python -m scripts.bench.content [--json]     # UnixFS CIDs vs sha256, fetching content from a peer
    python -m scripts.bench.dht [--json]         # capability lookups across 20 daemons
    python -m scripts.bench.shard [--json]       # sharded inference across 5 daemons
    python -m scripts.bench.serving [--json]     # MLP, CNN and MiniLM through the API vs in-process ORT
    python -m scripts.bench.export_minilm DIR    # all-MiniLM-L6-v2 to ONNX (serving and shard use it)

Running them as modules (``-m``) puts the repository root on ``sys.path``, so the benchmarks import
this tree's ``accel_node`` and ``p2p`` and the test support package without any path manipulation;
every process they start runs in the repository root with the tree first on ``PYTHONPATH``.

Shared pieces, written once:

- :mod:`.harness`: daemons (from :mod:`tests.support.daemons`), child processes, logging, the
  source revision and machine description every result records, ``KEY=VALUE`` daemon settings;
- :mod:`.cpu`: CPU seconds of processes and of the whole machine over a window (psutil), waiting
  for a quiet machine;
- :mod:`.stats`: median, percentiles, latency summaries, coefficient of variation, ratios;
- :mod:`.report`: result tables (aligned text or markdown rows), PASS/FAIL marks and rows of
  figures with their ratio against a named baseline.

A benchmark too big for one module keeps its driver (options, ``run_benchmark``, ``main``) in
``X.py`` and its parts beside it as ``X_<part>.py``: ``content_fetch``/``content_serve``,
``dht_network``/``dht_report``, ``node_load``/``node_report``, ``serving_model``/``serving_load``/
``serving_breakdown``/``serving_report``, ``shard_cluster``/``shard_load``/``shard_throughput``/
``shard_transport``/``shard_recovery``/``shard_report``. ``tests/bench/test_imports.py`` imports
every module, so CI keeps them importable without running them.

``docs/BENCHMARKS.md`` records each benchmark's method and results.
"""
