"""Why an inference request failed. Each failure carries the HTTP status the control API answers
with (``status``), so the API maps errors by attribute rather than by a table kept elsewhere."""

from __future__ import annotations

from typing import ClassVar

from accel_node.errors import AccelNodeError


class RuntimeFailure(AccelNodeError):
    """Base class of inference-runtime failures."""

    status: ClassVar[int] = 500


class InputError(RuntimeFailure):
    """The request's tensors do not fit the model: the message names the input (``input_name``)."""

    status: ClassVar[int] = 400

    def __init__(self, message: str, *, input_name: str | None = None) -> None:
        self.input_name = input_name
        super().__init__(message)


class PayloadTooLarge(InputError):
    """The body or a tensor in it exceeds a configured bound."""

    status: ClassVar[int] = 413


class UnsupportedMediaType(InputError):
    """The body's content type is not one the runtime decodes."""

    status: ClassVar[int] = 415


class ModelUnavailable(RuntimeFailure):
    """No such model (or no such variant of it) on this node."""

    status: ClassVar[int] = 404


class ModelNotVerified(RuntimeFailure):
    """The model is known but its content has not been verified, so it is never loaded."""

    status: ClassVar[int] = 409


class QueueFull(RuntimeFailure):
    """The model's request queue is full; ``retry_after_s`` estimates when there will be room."""

    status: ClassVar[int] = 429

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(message)


class InferenceTimeout(RuntimeFailure):
    """The request did not finish within its timeout (queueing included)."""

    status: ClassVar[int] = 504


class InferenceFailed(RuntimeFailure):
    """ONNX Runtime failed to create a session or to run the model."""

    status: ClassVar[int] = 500


class VariantError(RuntimeFailure):
    """A precision variant cannot be built or does not run for this model (on this machine)."""

    status: ClassVar[int] = 422
