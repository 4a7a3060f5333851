"""Performance prediction: how fast a model will run here or on a peer, before it runs.

- ``types``: workloads, hardware features, samples, predictions, the estimator protocol.
"""
