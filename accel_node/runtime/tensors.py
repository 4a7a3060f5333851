"""Tensor codecs for inference requests and responses, and validation against a model's signature.

Three body formats, none of which can carry pickled objects:

- ``application/json`` (small tensors): ``{"inputs": {name: tensor}}`` where a tensor is either a
  nested list (its dtype is the model's; JSON ints are accepted for integer and float inputs, JSON
  floats only for float inputs, JSON booleans only for bool inputs) or an explicit
  ``{"dtype": "float32", "shape": [2, 3], "data": [flat list]}`` whose dtype must be the model's.
  Responses are ``{"outputs": {name: {"dtype", "shape", "data"}}}`` (explicit form, lossless dtype).
- ``application/x-npz``: an uncompressed or deflated zip of ``<name>.npy`` members, as written by
  ``numpy.savez``. Members are parsed here from their ``.npy`` headers: only bool, integer and
  float dtypes are accepted (object arrays are refused, never unpickled), and the element count in
  each header is checked against the bound *before* the data is read, so a small deflated member
  cannot expand into a large allocation.
- ``application/x-npy``: a single ``.npy`` array, for models with exactly one input (or output).

Binary tensors must have the model's dtype exactly (any byte order; they are converted to native).
Every decoder bounds the body size and the total element count (:class:`TensorLimits`).

:func:`random_inputs` is the one generator of synthetic inputs (variants' accuracy batch and
benchmarks both use it).
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any, Protocol

import numpy as np

from accel_node.runtime.errors import InputError, PayloadTooLarge, UnsupportedMediaType

JSON_TYPE = "application/json"
NPZ_TYPE = "application/x-npz"
NPY_TYPE = "application/x-npy"
MEDIA_TYPES = (JSON_TYPE, NPZ_TYPE, NPY_TYPE)
MAX_RANK = 16
MAX_MEMBERS = 256
MAX_NPY_HEADER = 10_000
RANDOM_INT_HIGH = 16  # synthetic integer inputs are drawn from [0, RANDOM_INT_HIGH)

# Manifest dtype names numpy can hold. bfloat16 and string inputs are refused with a message.
NUMPY_DTYPES: dict[str, np.dtype[Any]] = {
    name: np.dtype(name)
    for name in ("float32", "float16", "float64", "int8", "uint8", "int16", "int32", "int64", "bool")
}


class SpecLike(Protocol):
    """What the runtime needs of a tensor in a signature (``accel_node.models.manifest.TensorSpec``)."""

    @property
    def name(self) -> str: ...
    @property
    def dtype(self) -> str: ...
    @property
    def shape(self) -> tuple[int | str | None, ...]: ...


Signature = Sequence[SpecLike]
Arrays = dict[str, np.ndarray[Any, Any]]


@dataclass(frozen=True)
class TensorLimits:
    """Bounds on what a request body may hold."""

    max_body_bytes: int = 64 << 20
    max_json_bytes: int = 4 << 20
    max_elements: int = 16 << 20
    max_json_elements: int = 1 << 20


def is_static(dim: int | str | None) -> bool:
    """A dimension the model fixes (ONNX ``dim_value`` > 0); str and None dims are dynamic."""
    return isinstance(dim, int) and dim > 0


def numpy_dtype(spec: SpecLike) -> np.dtype[Any]:
    try:
        return NUMPY_DTYPES[spec.dtype]
    except KeyError:
        raise InputError(
            f"input {spec.name!r} has dtype {spec.dtype}, which this runtime does not serve",
            input_name=spec.name,
        ) from None


def media_type(content_type: str | None) -> str:
    """The bare media type of a Content-Type header (parameters dropped); JSON when absent."""
    if not content_type:
        return JSON_TYPE
    return content_type.split(";", 1)[0].strip().lower()


# -- validation ------------------------------------------------------------------------------------


def check_names(names: Iterable[str], signature: Signature) -> None:
    given = set(names)
    expected = [spec.name for spec in signature]
    unknown = sorted(given.difference(expected))
    if unknown:
        raise InputError(
            f"unknown input {unknown[0]!r}; the model's inputs are {expected}", input_name=unknown[0]
        )
    missing = [name for name in expected if name not in given]
    if missing:
        raise InputError(f"missing input {missing[0]!r}", input_name=missing[0])


def validate(inputs: Mapping[str, Any], signature: Signature) -> Arrays:
    """Check names, dtypes, ranks, static dims and shared symbolic dims; native, contiguous arrays.

    A symbolic dim name used by several inputs (e.g. ``batch`` in ``input_ids`` and
    ``attention_mask``) must have the same size in all of them.
    """
    check_names(inputs.keys(), signature)
    symbols: dict[str, tuple[int, str]] = {}
    out: Arrays = {}
    for spec in signature:
        name = spec.name
        arr = inputs[name]
        if not isinstance(arr, np.ndarray):
            raise InputError(f"input {name!r} is not an array", input_name=name)
        expected = numpy_dtype(spec)
        native = arr.dtype.newbyteorder("=")
        if native != expected:
            raise InputError(
                f"input {name!r} has dtype {arr.dtype.name}; the model expects {spec.dtype}",
                input_name=name,
            )
        if arr.ndim != len(spec.shape):
            raise InputError(
                f"input {name!r} has rank {arr.ndim} (shape {list(arr.shape)}); the model expects rank "
                f"{len(spec.shape)} (shape {list(spec.shape)})",
                input_name=name,
            )
        for axis, (got, want) in enumerate(zip(arr.shape, spec.shape, strict=True)):
            if is_static(want) and got != want:
                raise InputError(
                    f"input {name!r} has size {got} on axis {axis}; the model fixes it to {want}",
                    input_name=name,
                )
            if isinstance(want, str) and want:
                seen = symbols.setdefault(want, (got, name))
                if seen[0] != got:
                    raise InputError(
                        f"input {name!r} has size {got} on axis {axis} ({want!r}), but input {seen[1]!r} "
                        f"has {seen[0]} for {want!r}",
                        input_name=name,
                    )
        if arr.dtype != native:
            arr = arr.astype(native)
        out[name] = np.ascontiguousarray(arr)
    return out


# -- JSON ------------------------------------------------------------------------------------------


def _from_json_values(name: str, values: Any, target: np.dtype[Any]) -> np.ndarray[Any, Any]:
    """Convert JSON numbers to ``target``, allowing only safe coercions (see module docstring)."""
    try:
        raw = np.asarray(values)
    except (ValueError, TypeError, OverflowError) as exc:
        raise InputError(
            f"input {name!r} is not a rectangular array of numbers: {exc}", input_name=name
        ) from exc
    kind = raw.dtype.kind
    if raw.size == 0:
        return raw.astype(target)
    allowed = {"f": "iuf", "i": "iu", "u": "iu", "b": "b"}[target.kind]
    if kind not in allowed:
        what = {"b": "booleans", "f": "floats", "i": "integers", "u": "integers", "U": "strings"}
        raise InputError(
            f"input {name!r} holds {what.get(kind, 'values of mixed or unsupported types')}; "
            f"the model expects {target.name}",
            input_name=name,
        )
    if target.kind in "iu":
        info = np.iinfo(target)
        if raw.min() < info.min or raw.max() > info.max:
            raise InputError(f"input {name!r} has values outside the range of {target.name}", input_name=name)
        return raw.astype(target)
    with np.errstate(over="ignore"):
        converted = raw.astype(target)
    if target.kind == "f" and not np.array_equal(np.isfinite(raw), np.isfinite(converted)):
        raise InputError(f"input {name!r} has values outside the range of {target.name}", input_name=name)
    return converted


def _json_tensor(name: str, value: Any, spec: SpecLike) -> np.ndarray[Any, Any]:
    target = numpy_dtype(spec)
    if not isinstance(value, dict):
        if not isinstance(value, list | int | float | bool):
            raise InputError(
                f"input {name!r} must be a nested list or a dtype/shape/data map", input_name=name
            )
        return _from_json_values(name, value, target)
    if set(value) != {"dtype", "shape", "data"}:
        raise InputError(f"input {name!r} must have exactly the keys dtype, shape and data", input_name=name)
    dtype, shape, data = value["dtype"], value["shape"], value["data"]
    if dtype != spec.dtype:
        raise InputError(
            f"input {name!r} has dtype {dtype!r}; the model expects {spec.dtype}", input_name=name
        )
    if (
        not isinstance(shape, list)
        or len(shape) > MAX_RANK
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    ):
        raise InputError(f"input {name!r}: shape must be a list of non-negative integers", input_name=name)
    if not isinstance(data, list) or any(isinstance(v, list | dict) for v in data):
        raise InputError(f"input {name!r}: data must be a flat list", input_name=name)
    if len(data) != math.prod(shape):
        raise InputError(
            f"input {name!r}: shape {shape} needs {math.prod(shape)} values, data has {len(data)}",
            input_name=name,
        )
    return _from_json_values(name, data, target).reshape(shape)


def decode_json(body: bytes, signature: Signature, limits: TensorLimits) -> Arrays:
    """Decode (and coerce, but not yet validate) a JSON request body."""
    if len(body) > limits.max_json_bytes:
        raise PayloadTooLarge(
            f"JSON body is {len(body)} bytes; the limit is {limits.max_json_bytes} (use application/x-npz)"
        )
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"body is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict) or set(doc) != {"inputs"} or not isinstance(doc["inputs"], dict):
        raise InputError('JSON body must be {"inputs": {name: tensor, ...}}')
    check_names(doc["inputs"].keys(), signature)
    out: Arrays = {}
    total = 0
    for spec in signature:
        arr = _json_tensor(spec.name, doc["inputs"][spec.name], spec)
        total += arr.size
        if total > limits.max_json_elements:
            raise PayloadTooLarge(
                f"JSON body holds more than {limits.max_json_elements} elements (use application/x-npz)",
            )
        out[spec.name] = arr
    return out


def encode_json(outputs: Mapping[str, np.ndarray[Any, Any]]) -> bytes:
    body = {
        name: {
            "dtype": "string" if arr.dtype.kind in "OUS" else arr.dtype.name,
            "shape": list(arr.shape),
            "data": arr.ravel().tolist(),
        }
        for name, arr in outputs.items()
    }
    return json.dumps({"outputs": body}, separators=(",", ":")).encode()


def decode_json_outputs(body: bytes, limits: TensorLimits) -> Arrays:
    """Client side: decode an ``{"outputs": ...}`` JSON response (explicit form only)."""
    if len(body) > limits.max_body_bytes:
        raise PayloadTooLarge(f"response is {len(body)} bytes; the limit is {limits.max_body_bytes}")
    try:
        doc = json.loads(body)
        outputs = doc["outputs"]
        out: Arrays = {}
        for name, value in outputs.items():
            dtype = "str" if value["dtype"] == "string" else value["dtype"]
            out[name] = np.asarray(value["data"], dtype=np.dtype(dtype)).reshape(value["shape"])
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise InputError(f"malformed JSON response: {exc}") from exc
    return out


# -- .npy / .npz -----------------------------------------------------------------------------------


def _read_npy(fp: IO[bytes], name: str, max_elements: int, kinds: str = "biuf") -> np.ndarray[Any, Any]:
    """Read one ``.npy`` array, bounded by its header, never unpickling anything."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(fp)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(fp, max_header_size=MAX_NPY_HEADER)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = fmt.read_array_header_2_0(fp, max_header_size=MAX_NPY_HEADER)
        else:
            raise ValueError(f"unsupported .npy format version {version}")
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise InputError(f"tensor {name!r} is not a valid .npy array: {exc}", input_name=name) from exc
    if dtype.hasobject:
        raise InputError(f"tensor {name!r} is an object array; those are refused", input_name=name)
    if dtype.kind not in kinds or dtype.fields is not None or dtype.subdtype is not None:
        raise InputError(f"tensor {name!r} has unsupported dtype {dtype.str}", input_name=name)
    if len(shape) > MAX_RANK:
        raise InputError(f"tensor {name!r} has rank {len(shape)}; the limit is {MAX_RANK}", input_name=name)
    count = math.prod(shape)
    if count > max_elements:
        raise PayloadTooLarge(
            f"tensor {name!r} has {count} elements; the limit is {max_elements}", input_name=name
        )
    size = count * dtype.itemsize
    try:
        data = fp.read(size)
    except (OSError, EOFError, zipfile.BadZipFile) as exc:  # corrupt deflate stream or CRC
        raise InputError(f"tensor {name!r} is corrupt: {exc}", input_name=name) from exc
    if len(data) != size:
        raise InputError(f"tensor {name!r} is truncated ({len(data)} of {size} bytes)", input_name=name)
    arr = np.frombuffer(data, dtype=dtype)
    if fortran:
        return arr.reshape(shape[::-1]).transpose()
    return arr.reshape(shape)


def decode_npy(
    body: bytes, limits: TensorLimits, *, name: str = "body", kinds: str = "biuf"
) -> np.ndarray[Any, Any]:
    if len(body) > limits.max_body_bytes:
        raise PayloadTooLarge(f"body is {len(body)} bytes; the limit is {limits.max_body_bytes}")
    fp = io.BytesIO(body)
    arr = _read_npy(fp, name, limits.max_elements, kinds)
    if fp.read(1):
        raise InputError(f"tensor {name!r} has trailing bytes after the array", input_name=name)
    return arr


def decode_npz(body: bytes, limits: TensorLimits, *, kinds: str = "biuf") -> Arrays:
    if len(body) > limits.max_body_bytes:
        raise PayloadTooLarge(f"body is {len(body)} bytes; the limit is {limits.max_body_bytes}")
    try:
        archive = zipfile.ZipFile(io.BytesIO(body))
        members = archive.infolist()
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise InputError(f"body is not a valid .npz archive: {exc}") from exc
    if len(members) > MAX_MEMBERS:
        raise InputError(f".npz archive has {len(members)} members; the limit is {MAX_MEMBERS}")
    out: Arrays = {}
    remaining = limits.max_elements
    with archive:
        for member in members:
            if not member.filename.endswith(".npy"):
                raise InputError(f".npz member {member.filename!r} is not a .npy array")
            name = member.filename[: -len(".npy")]
            if name in out:
                raise InputError(f".npz archive holds {name!r} twice", input_name=name)
            try:
                fp = archive.open(member)
            except (zipfile.BadZipFile, NotImplementedError, RuntimeError, ValueError) as exc:
                raise InputError(
                    f".npz member {member.filename!r} cannot be read: {exc}", input_name=name
                ) from exc
            with fp:
                arr = _read_npy(fp, name, remaining, kinds)
            remaining -= arr.size
            out[name] = arr
    return out


def encode_npy(array: np.ndarray[Any, Any]) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, _storable(array), allow_pickle=False)
    return buf.getvalue()


def encode_npz(outputs: Mapping[str, np.ndarray[Any, Any]]) -> bytes:
    """What ``numpy.savez`` writes (stored members), but never pickling."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, arr in outputs.items():
            with archive.open(name + ".npy", "w", force_zip64=True) as fp:
                np.lib.format.write_array(fp, _storable(arr), allow_pickle=False)
    return buf.getvalue()


def _storable(arr: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    # ONNX string outputs come back from ORT as object arrays: store them as fixed-width unicode.
    return np.asarray(arr, dtype=str) if arr.dtype.hasobject else arr


# -- request and response entry points -------------------------------------------------------------


def decode_request(
    body: bytes, content_type: str | None, signature: Signature, limits: TensorLimits
) -> Arrays:
    """Decode a request body of any supported type and validate it against the model's inputs."""
    kind = media_type(content_type)
    if kind == JSON_TYPE:
        return validate(decode_json(body, signature, limits), signature)
    if kind == NPZ_TYPE:
        return validate(decode_npz(body, limits), signature)
    if kind == NPY_TYPE:
        if len(signature) != 1:
            raise InputError(
                f"an {NPY_TYPE} body holds one tensor, but the model has {len(signature)} inputs; "
                f"send {NPZ_TYPE} or {JSON_TYPE}"
            )
        name = signature[0].name
        return validate({name: decode_npy(body, limits, name=name)}, signature)
    raise UnsupportedMediaType(f"unsupported content type {kind!r}; send one of {', '.join(MEDIA_TYPES)}")


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


def encode_response(outputs: Mapping[str, np.ndarray[Any, Any]], kind: str) -> bytes:
    if kind == NPZ_TYPE:
        return encode_npz(outputs)
    if kind == NPY_TYPE:
        if len(outputs) != 1:
            raise InputError(f"an {NPY_TYPE} response holds one tensor; the model has {len(outputs)} outputs")
        return encode_npy(next(iter(outputs.values())))
    return encode_json(outputs)


def decode_response(
    body: bytes, content_type: str | None, limits: TensorLimits, *, npy_name: str = "output"
) -> Arrays:
    """Client side: decode a response; an ``.npy`` response becomes ``{npy_name: array}``."""
    kind = media_type(content_type)
    if kind == NPZ_TYPE:
        return decode_npz(body, limits, kinds="biufU")
    if kind == NPY_TYPE:
        return {npy_name: decode_npy(body, limits, name=npy_name, kinds="biufU")}
    return decode_json_outputs(body, limits)


# -- synthetic inputs ------------------------------------------------------------------------------


def random_inputs(signature: Signature, *, batch: int, seq_len: int, seed: int) -> Arrays:
    """A reproducible input batch for ``signature``.

    Shapes: a dynamic first dim becomes ``batch``, every other dynamic dim ``seq_len``; static dims
    stay. Values: floats ~ N(0, 1); integers uniform in [0, RANDOM_INT_HIGH) (valid token ids for
    any vocabulary of at least 16); inputs whose name contains ``mask`` are all ones (True for
    bool), and ``token_type``/``segment`` ids are zeros (segment vocabularies are often 2).
    """
    rng = np.random.default_rng(seed)
    out: Arrays = {}
    for spec in signature:
        dtype = numpy_dtype(spec)
        shape = tuple(
            d if isinstance(d, int) and is_static(d) else (batch if axis == 0 else seq_len)
            for axis, d in enumerate(spec.shape)
        )  # fmt: skip
        lowered = spec.name.lower()
        if "mask" in lowered:
            out[spec.name] = np.ones(shape, dtype=dtype)
        elif dtype.kind == "f":
            out[spec.name] = rng.standard_normal(shape).astype(dtype)
        elif "token_type" in lowered or "segment" in lowered:
            out[spec.name] = np.zeros(shape, dtype=dtype)
        elif dtype.kind == "b":
            out[spec.name] = rng.random(shape) < 0.5
        else:
            out[spec.name] = rng.integers(0, RANDOM_INT_HIGH, size=shape).astype(dtype)
    return out
