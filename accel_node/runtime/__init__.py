"""The inference runtime: ONNX Runtime sessions, dynamic batching, precision variants, benchmarks.

- ``errors``: runtime failures, each with the HTTP status the API answers with.
- ``validation``: the input signature vocabulary and checking request tensors against it (never
  stricter than ONNX Runtime; placeholder dims such as ``?`` are free axes).
- ``codecs``: request/response codecs (JSON, .npz, .npy by bare media type; bounded, never pickle).
  Content-Type/Accept negotiation is the API's (``accel_node.api.media``).
- ``synthetic``: the seeded synthetic input generator.
- ``sessions``: ORT sessions (providers, options) and the memory-budgeted LRU ``SessionCache``.
- ``batcher``: the per-(model, variant) queue and dynamic batcher.
- ``variants``: int8 / fp16 variants and their accuracy delta against fp32.
- ``measure``: benchmark sweeps (latency, throughput, peak RSS).
- ``metrics``: Prometheus metrics on the node's registry.
- ``service``: ``InferenceService``, what the API calls, and ``RuntimeSettings``.
"""
