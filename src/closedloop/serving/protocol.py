"""Open Inference Protocol (KServe V2) over HTTP: request parsing and response encoding.

Covers JSON tensors and the binary tensor data extension: when the ``Inference-Header-Content-Length``
header is present, the body is that many bytes of JSON followed by the raw tensors, each input giving
its byte count in ``parameters.binary_data_size`` (little-endian, row-major; BYTES elements are a 4-byte
length followed by the bytes). Outputs are sent as binary when the request asks for it
(``binary_data`` on a requested output, or ``binary_data_output`` on the request), which is what
``tritonclient.http`` does by default.

Plain functions on bytes and numpy arrays; the web framework stays in ``app.py``.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import to_json

try:  # the `serve` extra brings orjson: it parses a one-image OIP body about 5x faster than json
    from orjson import JSONDecodeError as _FastJSONError
    from orjson import dumps as _fast_dumps
    from orjson import loads as _fast_loads
except ImportError:  # pragma: no cover - the standard library alone still serves
    _fast_loads = None
    _fast_dumps = to_json  # pydantic-core's encoder: the same text (shortest round-trip floats), slower

HEADER_LENGTH = "Inference-Header-Content-Length"

DATATYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
"""OIP datatype names and their numpy types (BYTES is handled apart: it is not a fixed-size type)."""

ParamValue = str | int | float | bool | None


class ProtocolError(ValueError):
    """A request the protocol (or the model's contract) rejects; ``status`` is the HTTP status."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class RequestInput(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, ParamValue] | None = None
    data: Any = None


class RequestOutput(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str
    parameters: dict[str, ParamValue] | None = None


class InferenceRequest(BaseModel):
    """The JSON part of an inference request (``model_name`` and other extra keys are ignored)."""

    model_config = ConfigDict(extra="ignore")

    id: str | None = None
    parameters: dict[str, ParamValue] | None = None
    inputs: list[RequestInput]
    outputs: list[RequestOutput] | None = None


@dataclass
class DecodedInput:
    name: str
    datatype: str
    array: np.ndarray


@dataclass
class DecodedRequest:
    id: str | None
    inputs: list[DecodedInput]
    outputs: list[RequestOutput] | None
    binary_output_default: bool
    parameters: dict[str, ParamValue] = field(default_factory=dict)


def _pydantic_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        loc = ".".join(str(p) for p in err["loc"]) or "request"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


def _loads(head: bytes) -> Any:
    """JSON text -> Python: orjson when it can; the standard library decides everything orjson refuses
    (the NaN/Infinity literals Python's json writes, integers beyond 64 bits, malformed text), so what is
    accepted and every error message stay the standard library's."""
    if _fast_loads is not None:
        try:
            return _fast_loads(head)
        except _FastJSONError:
            pass
    return json.loads(head)


def parse_infer_request(body: bytes, header_length: str | None) -> DecodedRequest:
    """Decode an inference request body (JSON, or JSON + binary tensors) into numpy arrays."""
    if header_length is not None:
        try:
            n = int(header_length)
        except ValueError:
            raise ProtocolError(f"{HEADER_LENGTH} header {header_length!r} is not an integer") from None
        if not 0 < n <= len(body):
            raise ProtocolError(
                f"{HEADER_LENGTH} header is {n} but the body has {len(body)} bytes; expected the length "
                "of the JSON part, at most the body length"
            )
        head, tail = body[:n], memoryview(body)[n:]
    else:
        head, tail = body, memoryview(b"")
    try:
        raw = _loads(head)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        where = f"the first {header_length} bytes (the JSON header)" if header_length else "the body"
        raise ProtocolError(f"malformed JSON in {where}: {exc}") from None
    if not isinstance(raw, dict):
        raise ProtocolError(f"the inference request must be a JSON object, got {type(raw).__name__}")
    try:
        req = InferenceRequest.model_validate(raw)
    except ValidationError as exc:
        raise ProtocolError(f"invalid inference request: {_pydantic_message(exc)}") from None

    inputs, offset = [], 0
    for inp in req.inputs:
        size = (inp.parameters or {}).get("binary_data_size")
        if size is not None:
            if isinstance(size, bool) or not isinstance(size, int) or size < 0:
                raise ProtocolError(f"input {inp.name!r}: binary_data_size {size!r} is not a byte count")
            if offset + size > len(tail):
                raise ProtocolError(
                    f"input {inp.name!r}: binary_data_size {size} goes past the end of the body "
                    f"({len(tail) - offset} binary bytes left)"
                )
            arr = _from_binary(inp, tail[offset : offset + size])
            offset += size
        else:
            arr = _from_json(inp)
        inputs.append(DecodedInput(inp.name, inp.datatype, arr))
    if offset != len(tail):
        raise ProtocolError(
            f"the body has {len(tail) - offset} binary bytes that no input's binary_data_size accounts for"
        )
    params = req.parameters or {}
    return DecodedRequest(
        id=req.id,
        inputs=inputs,
        outputs=req.outputs,
        binary_output_default=bool(params.get("binary_data_output", False)),
        parameters=params,
    )


def _count(inp: RequestInput) -> int:
    if any(d < 0 for d in inp.shape):
        raise ProtocolError(f"input {inp.name!r}: shape {inp.shape} has a negative dimension")
    return math.prod(inp.shape)


def _numeric_dtype(inp: RequestInput) -> np.dtype:
    """The numpy dtype of a numeric input's ``datatype``; a clear error for BYTES or an unknown name."""
    if inp.datatype == "BYTES":
        raise ProtocolError(f"input {inp.name!r}: datatype BYTES is not a numeric tensor")
    dt = DATATYPES.get(inp.datatype)
    if dt is None:
        raise ProtocolError(
            f"input {inp.name!r}: unknown datatype {inp.datatype!r}; expected one of {list(DATATYPES)}"
        )
    return dt


def _from_binary(inp: RequestInput, buf: memoryview) -> np.ndarray:
    dt = _numeric_dtype(inp)
    n = _count(inp)
    if len(buf) != n * dt.itemsize:
        raise ProtocolError(
            f"input {inp.name!r}: binary_data_size is {len(buf)} bytes but shape {inp.shape} of "
            f"{inp.datatype} needs {n * dt.itemsize}"
        )
    return np.frombuffer(buf, dtype=dt).reshape(inp.shape)


def _from_json(inp: RequestInput) -> np.ndarray:
    if inp.data is None:
        raise ProtocolError(f"input {inp.name!r}: no 'data' and no binary_data_size parameter")
    if inp.datatype == "BYTES":  # table values by name (category names); the service decides their use
        return _bytes_from_json(inp)
    if inp.datatype == "UINT8" and type(inp.data) is list:
        pixels = _uint8_from_flat_list(inp)
        if pixels is not None:
            return pixels
    dt = _numeric_dtype(inp)
    n = _count(inp)
    try:
        arr = np.asarray(inp.data).reshape(-1)
    except (TypeError, ValueError):  # ragged nesting
        arr = None
    if arr is None or arr.dtype.kind not in "biuf":
        raise ProtocolError(f"input {inp.name!r}: 'data' is not a (nested) list of {inp.datatype} numbers")
    if arr.size != n:
        raise ProtocolError(
            f"input {inp.name!r}: 'data' has {arr.size} elements but shape {inp.shape} needs {n}"
        )
    if dt.kind in "biu":
        if arr.dtype.kind == "f" and not np.all(np.isfinite(arr) & (arr == np.round(arr))):
            raise ProtocolError(
                f"input {inp.name!r}: 'data' holds non-integer values for datatype {inp.datatype}"
            )
        info = np.iinfo(dt) if dt.kind in "iu" else None
        if info is not None and arr.size and (arr.min() < info.min or arr.max() > info.max):
            raise ProtocolError(
                f"input {inp.name!r}: values {arr.min()}..{arr.max()} do not fit datatype {inp.datatype}"
            )
    return arr.astype(dt).reshape(inp.shape)


def _uint8_from_flat_list(inp: RequestInput) -> np.ndarray | None:
    """Raw pixels sent as one flat list of integers (what an image client sends), or None for anything
    else. ``bytes()`` takes exactly the integers 0..255 (and booleans, as numpy's path does), about 3x
    faster than numpy converts a list of Python ints; a nested list, a float, a value out of range or a
    wrong count goes on through the general path, which accepts or refuses it with the same message."""
    try:
        pixels = bytes(inp.data)
    except (TypeError, ValueError):
        return None
    if len(pixels) != _count(inp):
        return None
    return np.frombuffer(pixels, np.uint8).reshape(inp.shape)


def _bytes_from_json(inp: RequestInput) -> np.ndarray:
    """A BYTES tensor's JSON data as an object array of its shape: strings, and for table rows also
    numbers and null (a missing value), which the service checks column by column."""
    flat: list[Any] = []

    def walk(v: Any) -> None:
        if isinstance(v, list):
            for e in v:
                walk(e)
        elif v is None or isinstance(v, str | int | float) and not isinstance(v, bool):
            flat.append(v)
        else:
            raise ProtocolError(
                f"input {inp.name!r}: BYTES data holds {v!r}; expected strings, numbers or null"
            )

    walk(inp.data)
    n = _count(inp)
    if len(flat) != n:
        raise ProtocolError(
            f"input {inp.name!r}: 'data' has {len(flat)} elements but shape {inp.shape} needs {n}"
        )
    arr = np.empty(n, dtype=object)
    arr[:] = flat
    return arr.reshape(inp.shape)


# -- responses ------------------------------------------------------------------------------------
@dataclass
class OutputTensor:
    name: str
    datatype: str
    array: np.ndarray | list[str]
    """A numeric array, or for BYTES an object array of str or a plain list of str (one dimension)."""

    def shape(self) -> list[int]:
        return [len(self.array)] if isinstance(self.array, list) else list(self.array.shape)

    def strings(self) -> list[str]:
        """A BYTES tensor's elements, flat."""
        return self.array if isinstance(self.array, list) else [str(v) for v in self.array.reshape(-1)]


def encode_response(
    head: dict[str, Any], outputs: list[OutputTensor], binary: dict[str, bool]
) -> tuple[bytes, int | None]:
    """The response body and, when some output is binary, the JSON header length for the header."""
    chunks: list[bytes] = []
    out_json = []
    for t in outputs:
        entry: dict[str, Any] = {"name": t.name, "datatype": t.datatype, "shape": t.shape()}
        if binary.get(t.name, False):
            if t.datatype == "BYTES":
                raw = b"".join(struct.pack("<I", len(b)) + b for b in (v.encode() for v in t.strings()))
            else:
                raw = np.ascontiguousarray(t.array, dtype=DATATYPES[t.datatype]).tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = t.strings() if t.datatype == "BYTES" else t.array.reshape(-1).tolist()  # type: ignore[union-attr]
        out_json.append(entry)
    # orjson (or pydantic-core's encoder) writes floats in their shortest round-trip form, as Python's
    # repr does, several times faster than json; orjson is again about 2x faster than pydantic-core
    header = _fast_dumps({**head, "outputs": out_json})
    if not chunks:
        return header, None
    return header + b"".join(chunks), len(header)


def requested_outputs(req: DecodedRequest, available: list[str]) -> tuple[list[str], dict[str, bool]]:
    """Which outputs to return (all when none is named) and which of them as binary data."""
    if not req.outputs:
        return available, {n: req.binary_output_default for n in available}
    names, binary = [], {}
    for out in req.outputs:
        if out.name not in available:
            raise ProtocolError(f"unknown output {out.name!r}; this model's outputs are {available}")
        flag = (out.parameters or {}).get("binary_data")
        names.append(out.name)
        binary[out.name] = bool(req.binary_output_default if flag is None else flag)
    return names, binary
