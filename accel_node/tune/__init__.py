"""Online tuning of the serving configuration (max batch, batch wait, threads, precision) per model.

- ``types``: arms (configurations), the tuner protocol the inference service calls.
"""
