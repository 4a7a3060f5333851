"""Tensor codecs: request and response bodies to arrays and back, bounded, never unpickling.

Three body formats, each named by its media type (the API negotiates which one a request uses,
see :mod:`accel_node.api.media`):

- ``application/json`` (small tensors): ``{"inputs": {name: tensor}}`` where a tensor is either a
  nested list or a plain number for a rank-0 input (its dtype is the model's; JSON ints are
  accepted for integer and float inputs, JSON floats only for float inputs, JSON booleans only for
  bool inputs) or an explicit ``{"dtype": "float32", "shape": [2, 3], "data": [flat list]}`` whose
  dtype must be the model's. Responses are ``{"outputs": {name: {"dtype", "shape", "data"}}}``
  (explicit form, lossless dtype).
- ``application/x-npz``: an uncompressed or deflated zip of ``<name>.npy`` members, as written by
  ``numpy.savez``. Members are parsed here from their ``.npy`` headers: only bool, integer and
  float dtypes are accepted (object arrays are refused, never unpickled), and the element count in
  each header is checked against the bound *before* the data is read, so a small deflated member
  cannot expand into a large allocation.
- ``application/x-npy``: a single ``.npy`` array, for models with exactly one input (or output).

Binary tensors must have the model's dtype exactly (any byte order; they are converted to native).
Every decoder bounds the body size and the total element count (:class:`TensorLimits`).
"""

from __future__ import annotations

import io
import json
import lzma
import math
import tokenize
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import IO, Any

import numpy as np

from accel_node.runtime.errors import InputError, PayloadTooLarge, UnsupportedMediaType
from accel_node.runtime.validation import Arrays, Signature, SpecLike, check_names, numpy_dtype, validate

JSON_TYPE = "application/json"
NPZ_TYPE = "application/x-npz"
NPY_TYPE = "application/x-npy"
MEDIA_TYPES = (JSON_TYPE, NPZ_TYPE, NPY_TYPE)
MAX_RANK = 16
MAX_MEMBERS = 256
MAX_NPY_HEADER = 10_000
MAX_JSON_DEPTH = MAX_RANK + 8
"""Deepest nesting of arrays/objects a JSON body may have: a tensor of rank ``MAX_RANK`` inside
``{"inputs": {name: ...}}`` (or ``{"outputs": {name: {"data": ...}}}``) with room to spare. Checked before
the parser runs, since Python's parser recurses per level and a body of ``[[[[...`` would otherwise
end in a RecursionError (a 500) rather than a 400."""

_ARCHIVE_ERRORS = (OSError, EOFError, zipfile.BadZipFile, zlib.error, lzma.LZMAError)
"""What reading a member of a corrupt archive raises (bz2 raises OSError)."""


@dataclass(frozen=True)
class TensorLimits:
    """Bounds on what a request body may hold."""

    max_body_bytes: int = 64 << 20
    max_json_bytes: int = 4 << 20
    max_elements: int = 16 << 20
    max_json_elements: int = 1 << 20


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


def json_depth(body: bytes) -> int:
    """The deepest nesting of ``[``/``{`` in the JSON text ``body`` (brackets inside strings do not
    count), computed without recursion. For text that is not valid JSON the figure means nothing (the
    parser refuses such text anyway)."""
    # Escapes only occur inside strings: dropping them leaves every remaining quote a delimiter.
    text = np.frombuffer(body.replace(b"\\\\", b"").replace(b'\\"', b""), dtype=np.uint8)
    if text.size == 0:
        return 0
    outside = np.cumsum(text == ord('"')) % 2 == 0
    step = np.zeros(text.size, dtype=np.int64)
    step[(text == ord("[")) | (text == ord("{"))] = 1
    step[(text == ord("]")) | (text == ord("}"))] = -1
    return int(np.cumsum(step * outside).max(initial=0))


def _load_json(body: bytes, what: str) -> Any:
    """``json.loads`` with the nesting bounded first (:data:`MAX_JSON_DEPTH`); one error for any failure."""
    if json_depth(body) > MAX_JSON_DEPTH:
        raise InputError(f"{what} is nested more than {MAX_JSON_DEPTH} levels deep")
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise InputError(f"{what} is not valid JSON: {exc}") from exc


def decode_json(body: bytes, signature: Signature, limits: TensorLimits) -> Arrays:
    """Decode (and coerce, but not yet validate) a JSON request body."""
    if len(body) > limits.max_json_bytes:
        raise PayloadTooLarge(
            f"JSON body is {len(body)} bytes; the limit is {limits.max_json_bytes} (use application/x-npz)"
        )
    doc = _load_json(body, "body")
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


JSON_OUTPUT_DTYPES = frozenset(
    {"bool", "float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32",
     "uint64", "string"}
)  # fmt: skip
"""The dtypes :func:`encode_json` writes for ONNX outputs; a response naming another is refused."""


def decode_json_outputs(body: bytes, limits: TensorLimits) -> Arrays:
    """Client side: decode an ``{"outputs": ...}`` JSON response (explicit form only)."""
    if len(body) > limits.max_body_bytes:
        raise PayloadTooLarge(f"response is {len(body)} bytes; the limit is {limits.max_body_bytes}")
    doc = _load_json(body, "JSON response")
    try:
        outputs = doc["outputs"]
        out: Arrays = {}
        for name, value in outputs.items():
            if value["dtype"] not in JSON_OUTPUT_DTYPES:  # not any numpy dtype string: "U100000000" is 400 MB
                raise InputError(f"response tensor {str(name)[:64]!r} has an unsupported dtype")
            dtype = "str" if value["dtype"] == "string" else value["dtype"]
            out[name] = np.asarray(value["data"], dtype=np.dtype(dtype)).reshape(value["shape"])
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError, OverflowError) as exc:
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
    except (ValueError, SyntaxError, tokenize.TokenError, *_ARCHIVE_ERRORS) as exc:
        # (numpy re-tokenizes an old-style header it cannot parse: TokenError for an unclosed bracket)
        raise InputError(f"tensor {name!r} is not a valid .npy array: {exc}", input_name=name) from exc
    if dtype.hasobject:
        raise InputError(f"tensor {name!r} is an object array; those are refused", input_name=name)
    if (
        dtype.kind not in kinds
        or dtype.fields is not None
        or dtype.subdtype is not None
        or not dtype.itemsize
    ):
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
    except _ARCHIVE_ERRORS as exc:  # corrupt deflate or LZMA stream, or CRC
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
    except (zipfile.BadZipFile, ValueError, OSError, NotImplementedError) as exc:  # (unknown zip version)
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


# -- by format -------------------------------------------------------------------------------------


def decode_inputs(body: bytes, kind: str, signature: Signature, limits: TensorLimits) -> Arrays:
    """Decode a request body of format ``kind`` (a bare media type) and validate it."""
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


def encode_outputs(outputs: Mapping[str, np.ndarray[Any, Any]], kind: str) -> bytes:
    """A response body of format ``kind``; anything but npz and npy is JSON."""
    if kind == NPZ_TYPE:
        return encode_npz(outputs)
    if kind == NPY_TYPE:
        if len(outputs) != 1:
            raise InputError(f"an {NPY_TYPE} response holds one tensor; the model has {len(outputs)} outputs")
        return encode_npy(next(iter(outputs.values())))
    return encode_json(outputs)


def decode_outputs(body: bytes, kind: str, limits: TensorLimits, *, npy_name: str = "output") -> Arrays:
    """Client side: decode a response of format ``kind``; ``.npy`` becomes ``{npy_name: array}``."""
    if kind == NPZ_TYPE:
        return decode_npz(body, limits, kinds="biufU")
    if kind == NPY_TYPE:
        return {npy_name: decode_npy(body, limits, name=npy_name, kinds="biufU")}
    return decode_json_outputs(body, limits)
