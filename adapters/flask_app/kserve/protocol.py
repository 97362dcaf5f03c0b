"""The Open Inference Protocol (KServe v2) HTTP wire format: request parsing, response encoding.

A request body is JSON, or, with the binary tensor data extension (what tritonclient sends), a
JSON header of ``Inference-Header-Content-Length`` bytes followed by the raw data of each input
that declares ``parameters.binary_data_size``, in input order. Raw BYTES elements are a 4-byte
little-endian length and the bytes; raw FP32 is little-endian, row-major. In JSON, BYTES elements
are base64 strings (an image is not text) and FP32 elements are numbers, flat or nested.
Responses use the same two forms. Every malformed request raises :class:`ApiError` (4xx).
"""
from __future__ import annotations

import base64
import binascii
import json
import math
import struct
import zlib
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Optional, Union

import numpy as np
from flask import Response, jsonify
from pydantic import BaseModel, Field, PrivateAttr, StrictInt, ValidationError

from adapters.flask_app.api.errors import ApiError

_LENGTH = struct.Struct("<I")
MAX_INFLATE_RATIO = 20  # inflated / compressed size of a request body


def error_response(status: int, code: str, message: str) -> Response:
    """A KServe v2 error: ``{"error": message, "code": code}`` with the status (tritonclient
    raises ``InferenceServerException`` carrying ``error`` as its message)."""
    resp = jsonify(error=message, code=code)
    resp.status_code = status
    return resp


def _bad(message: str, code: str = "bad_request", status: int = 400) -> ApiError:
    return ApiError(status, code, message)


class InputTensor(BaseModel):
    """One request input. ``raw`` holds its binary data when it was sent as binary."""

    name: str
    shape: list[Annotated[StrictInt, Field(ge=0)]] = Field(max_length=8)
    datatype: str
    parameters: dict[str, Any] = Field(default_factory=dict)
    data: Any = None
    _raw: Optional[bytes] = PrivateAttr(None)

    @property
    def raw(self) -> Optional[bytes]:
        return self._raw

    @property
    def count(self) -> int:
        """Number of elements the shape declares."""
        return math.prod(self.shape)


class RequestedOutput(BaseModel):
    """An output the client asks for; ``parameters.binary_data`` asks for it in binary."""

    name: str
    parameters: dict[str, Any] = Field(default_factory=dict)


class InferenceRequest(BaseModel):
    """The JSON part of an infer request."""

    id: Optional[str] = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    inputs: list[InputTensor] = Field(min_length=1)
    outputs: Optional[list[RequestedOutput]] = None


def request_body(data: bytes, content_encoding: Optional[str], limit: int) -> bytes:
    """The request body, inflated when ``Content-Encoding`` is gzip or deflate (tritonclient's
    ``request_compression_algorithm``); 413 when the inflated body passes ``limit`` bytes."""
    encoding = (content_encoding or "identity").strip().lower()
    if encoding == "identity":
        return data
    if encoding not in ("gzip", "deflate"):
        raise _bad(f"Content-Encoding {encoding!r} is not supported: send the body plain, gzip or deflate",
                   "unsupported_media_type", 415)
    inflater = zlib.decompressobj(wbits=47)  # 32 + 15: a gzip or zlib header, detected
    try:
        body = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise _bad(f"cannot inflate the {encoding} body: {exc}") from None
    if len(body) > limit:
        raise _bad(f"request larger than {limit:,} bytes once inflated; send fewer or smaller inputs",
                   "payload_too_large", 413)
    if not inflater.eof:
        raise _bad(f"the {encoding} body is truncated")
    if len(body) > MAX_INFLATE_RATIO * len(data) + 65536:
        # images and float tensors shrink a few times at most: a bigger ratio is a bomb, whose
        # parsing (JSON numbers take ~30 bytes each in Python) would cost far more than its upload
        raise _bad(f"the {encoding} body inflates {len(body) // max(len(data), 1)}-fold, more than "
                   f"{MAX_INFLATE_RATIO}-fold: send images and tensors as binary data, uncompressed or gzipped",
                   "payload_too_large", 413)
    return body


def parse_request(body: bytes, header_length: Optional[str]) -> InferenceRequest:
    """Validate an infer request body; binary input data is attached as each input's ``raw``."""
    if header_length is None:
        head, binary = body, b""
    else:
        try:
            size = int(header_length)
        except ValueError:
            raise _bad(f"Inference-Header-Content-Length must be a number of bytes, not {header_length!r}") from None
        if not 0 <= size <= len(body):
            raise _bad(f"Inference-Header-Content-Length {size} does not fit the {len(body)}-byte body")
        head, binary = body[:size], body[size:]
    try:
        doc = json.loads(head)
    except (ValueError, RecursionError) as exc:  # RecursionError: absurdly nested JSON
        raise _bad(f"the request header is not valid JSON: {str(exc)[:200]}") from None
    try:
        req = InferenceRequest.model_validate(doc)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "request"
        raise _bad(f"invalid inference request: {where}: {first['msg']}") from None
    names = [t.name for t in req.inputs]
    if any(key.startswith("shared_memory") for t in req.inputs for key in t.parameters):
        raise _bad("shared-memory inputs are not supported: send the data in the request")
    if len(set(names)) != len(names):
        raise _bad(f"input names must be unique, got {names}")
    _attach_binary(req, binary)
    return req


def _attach_binary(req: InferenceRequest, binary: bytes) -> None:
    offset = 0
    for tensor in req.inputs:
        size = tensor.parameters.get("binary_data_size")
        if size is None:
            continue
        if type(size) is not int or size < 0:
            raise _bad(f"input {tensor.name!r}: binary_data_size must be a non-negative integer, not {size!r}")
        if tensor.data is not None:
            raise _bad(f"input {tensor.name!r} has both JSON data and binary_data_size: send one")
        if offset + size > len(binary):
            raise _bad(f"input {tensor.name!r} declares {size} bytes of binary data, but only "
                       f"{len(binary) - offset} follow the JSON header")
        tensor._raw = binary[offset:offset + size]
        offset += size
    if offset != len(binary):
        raise _bad(f"{len(binary) - offset} bytes after the JSON header belong to no input: declare "
                   "each input's binary_data_size, or set Inference-Header-Content-Length to the JSON size")


def bytes_elements(tensor: InputTensor) -> list[bytes]:
    """The elements of a BYTES input, as many as its shape declares."""
    if tensor.raw is not None:
        items = _split_bytes(tensor.raw, tensor.name)
    elif tensor.data is None:
        raise _bad(f"input {tensor.name!r} has no data: send 'data' or binary data")
    else:
        encoding = tensor.parameters.get("content_type", "base64")
        if encoding != "base64":
            raise _bad(f"input {tensor.name!r}: JSON BYTES data must be base64 (content_type 'base64'), "
                       f"not {encoding!r}; or send it as binary data")
        items = [_unbase64(v, tensor.name, i) for i, v in enumerate(_flatten(tensor.data, len(tensor.shape), tensor.name))]
    if len(items) != tensor.count:
        raise _bad(f"input {tensor.name!r} has {len(items)} elements, but its shape {tensor.shape} says {tensor.count}")
    return items


def _split_bytes(raw: bytes, name: str) -> list[bytes]:
    items, pos = [], 0
    while pos < len(raw):
        if pos + 4 > len(raw):
            raise _bad(f"input {name!r}: binary BYTES data ends inside the length of element {len(items)}")
        (size,) = _LENGTH.unpack_from(raw, pos)
        pos += 4
        if pos + size > len(raw):
            raise _bad(f"input {name!r}: element {len(items)} declares {size} bytes, only {len(raw) - pos} follow")
        items.append(raw[pos:pos + size])
        pos += size
    return items


def _flatten(data: Any, dims: int, name: str) -> list:
    if not isinstance(data, list):
        raise _bad(f"input {name!r}: 'data' must be a list")
    items = data
    for _ in range(max(dims - 1, 0)):
        nested = [isinstance(x, list) for x in items]
        if not any(nested):
            break
        if not all(nested):
            raise _bad(f"input {name!r}: 'data' mixes lists and values")
        items = [y for x in items for y in x]
    return items


def _unbase64(value: Any, name: str, index: int) -> bytes:
    if not isinstance(value, str):
        raise _bad(f"input {name!r}: element {index} must be a base64 string, not {type(value).__name__}")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise _bad(f"input {name!r}: element {index} is not valid base64") from None


def fp32_array(tensor: InputTensor) -> np.ndarray:
    """The data of an FP32 input as a float32 array of its shape."""
    if tensor.raw is not None:
        if len(tensor.raw) != 4 * tensor.count:
            raise _bad(f"input {tensor.name!r}: {len(tensor.raw)} bytes of FP32 data, but shape {tensor.shape} "
                       f"needs {4 * tensor.count}")
        return np.frombuffer(tensor.raw, dtype="<f4").astype(np.float32).reshape(tensor.shape)
    if tensor.data is None:
        raise _bad(f"input {tensor.name!r} has no data: send 'data' or binary data")
    try:
        values = np.asarray(tensor.data)
    except (ValueError, TypeError):
        raise _bad(f"input {tensor.name!r}: 'data' is not a regular array of numbers") from None
    if values.dtype.kind not in "iuf":
        raise _bad(f"input {tensor.name!r}: FP32 'data' must hold only numbers")
    if values.size != tensor.count:
        raise _bad(f"input {tensor.name!r} has {values.size} elements, but its shape {tensor.shape} says {tensor.count}")
    return values.astype(np.float32).reshape(tensor.shape)


@dataclass(frozen=True)
class OutputTensor:
    """One response output: FP32 values as an array, BYTES values as text, row-major."""

    name: str
    datatype: Literal["FP32", "BYTES"]
    shape: list[int]
    values: Union[np.ndarray, list[str]]

    def json_data(self) -> list:
        return self.values.ravel().tolist() if self.datatype == "FP32" else list(self.values)

    def binary_data(self) -> bytes:
        if self.datatype == "FP32":
            return np.ascontiguousarray(self.values, dtype="<f4").tobytes()
        return b"".join(_LENGTH.pack(len(b)) + b for b in (v.encode() for v in self.values))


def encode_response(header: dict[str, Any], outputs: list[OutputTensor], binary: set[str]) -> tuple[bytes, dict[str, str]]:
    """(body, headers) of an infer response: ``header`` plus ``outputs``, those named in
    ``binary`` as binary data after the JSON (then ``Inference-Header-Content-Length`` is set)."""
    entries, blobs = [], []
    for out in outputs:
        entry: dict[str, Any] = {"name": out.name, "datatype": out.datatype, "shape": out.shape}
        if out.name in binary:
            blob = out.binary_data()
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = out.json_data()
        entries.append(entry)
    head = json.dumps({**header, "outputs": entries}, separators=(",", ":")).encode()
    if not blobs:
        return head, {"Content-Type": "application/json"}
    return head + b"".join(blobs), {"Content-Type": "application/octet-stream",
                                    "Inference-Header-Content-Length": str(len(head))}
