"""Media-type negotiation of inference bodies: Content-Type and Accept headers to a tensor codec.

The codecs themselves (:mod:`accel_node.runtime.codecs`) take a bare media type; this module reads
the HTTP headers: a request is decoded by its Content-Type (JSON when absent, parameters such as
``charset`` ignored), and the response has the first supported type in Accept, else the request's
own format.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from accel_node.runtime.codecs import (
    JSON_TYPE,
    MEDIA_TYPES,
    NPY_TYPE,
    NPZ_TYPE,
    TensorLimits,
    decode_inputs,
    decode_outputs,
    encode_outputs,
)
from accel_node.runtime.validation import Arrays, Signature


def media_type(content_type: str | None) -> str:
    """The bare media type of a Content-Type header (parameters dropped); JSON when absent."""
    if not content_type:
        return JSON_TYPE
    return content_type.split(";", 1)[0].strip().lower()


def response_media_type(accept: str | None, request_type: str, n_outputs: int) -> str:
    """The response format: the first supported type in Accept, else the request's own format.

    An ``.npy`` request for a model with several outputs answers ``.npz``.
    """
    fallback = request_type if request_type in MEDIA_TYPES else JSON_TYPE
    if fallback == NPY_TYPE and n_outputs != 1:
        fallback = NPZ_TYPE
    for item in (accept or "").split(","):
        kind = media_type(item) if item.strip() else ""
        if kind == NPY_TYPE and n_outputs != 1:
            continue
        if kind in MEDIA_TYPES:
            return kind
    return fallback


def decode_request(
    body: bytes, content_type: str | None, signature: Signature, limits: TensorLimits
) -> Arrays:
    """Decode a request body of any supported type and validate it against the model's inputs."""
    return decode_inputs(body, media_type(content_type), signature, limits)


def encode_response(outputs: Mapping[str, np.ndarray[Any, Any]], kind: str) -> bytes:
    """The response body in the negotiated ``kind`` (see :func:`response_media_type`)."""
    return encode_outputs(outputs, kind)


def decode_response(
    body: bytes, content_type: str | None, limits: TensorLimits, *, npy_name: str = "output"
) -> Arrays:
    """Client side: decode a response by its Content-Type; ``.npy`` becomes ``{npy_name: array}``."""
    return decode_outputs(body, media_type(content_type), limits, npy_name=npy_name)
