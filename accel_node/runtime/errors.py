"""Why an inference request failed. Each failure carries the HTTP status the control API answers
with (``status``) and a stable ``code`` (see :mod:`accel_node.errors`)."""

from __future__ import annotations

import math
from typing import Any

from accel_node.errors import AccelNodeError


class RuntimeFailure(AccelNodeError):
    """Base class of inference-runtime failures."""

    status = 500
    code = "runtime_failure"


class InputError(RuntimeFailure):
    """The request's tensors do not fit the model: the message names the input (``input_name``)."""

    status = 400
    code = "invalid_input"

    def __init__(self, message: str, *, input_name: str | None = None) -> None:
        self.input_name = input_name
        super().__init__(message)

    def extra(self) -> dict[str, Any]:
        return {} if self.input_name is None else {"input": self.input_name}


class PayloadTooLarge(InputError):
    """The body or a tensor in it exceeds a configured bound."""

    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(InputError):
    """The body's content type is not one the runtime decodes."""

    status = 415
    code = "unsupported_media_type"


class ModelUnavailable(RuntimeFailure):
    """No such model (or no such variant of it) on this node."""

    status = 404
    code = "model_unavailable"


class ModelNotVerified(RuntimeFailure):
    """The model is known but its content has not been verified, so it is never loaded."""

    status = 409
    code = "model_not_verified"


class QueueFull(RuntimeFailure):
    """The model's request queue is full; ``retry_after_s`` estimates when there will be room."""

    status = 429
    code = "queue_full"

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(message)

    def extra(self) -> dict[str, Any]:
        return {"retry_after_s": round(self.retry_after_s, 3)}

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(max(1, math.ceil(self.retry_after_s)))}


class InferenceTimeout(RuntimeFailure):
    """The request did not finish within its timeout (queueing included)."""

    status = 504
    code = "inference_timeout"


class InferenceFailed(RuntimeFailure):
    """ONNX Runtime failed to create a session or to run the model."""

    status = 500
    code = "inference_failed"


class VariantError(RuntimeFailure):
    """A precision variant cannot be built or does not run for this model (on this machine)."""

    status = 422
    code = "variant_unavailable"
