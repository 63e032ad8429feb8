"""Checking a GraphPipe `Request` buffer before anything reads it.

FlatBuffers' Python runtime has no verifier: its accessors follow whatever offsets a buffer
holds, so a truncated or forged body fails deep inside the runtime, or (an offset that wraps
to the end of the buffer) reads other bytes without failing at all. `verify_request` walks
the request the way FlatBuffers' C++ `Verifier` does — every table, vtable, field, vector and
string of the schema's `Request`, `InferRequest`, `MetadataRequest` and `Tensor` inside the
buffer, strings NUL-terminated — so that the generated classes read only checked bytes.

A buffer may point several vector elements at one string or tensor (shared strings are
legal FlatBuffers): what they refer to, counted once per reference, may not exceed
`AMPLIFICATION` times the buffer, so a small body cannot expand into gigabytes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from forestflow.errors import MalformedRequest

AMPLIFICATION = 4
"""How many times its own size a request may refer to (shared vectors counted per use)."""
REQ_INFER = 1
REQ_METADATA = 2
"""The `Req` union's members, in the schema's order (0 is NONE)."""

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_I32 = struct.Struct("<i")
_OFFSET = 4
_VTABLE_HEADER = 4


def malformed(why: str, field: str) -> MalformedRequest:
    """The error for a body that is not a well-formed GraphPipe `Request`."""
    return MalformedRequest(f"not a valid GraphPipe Request flatbuffer: {why}", field=field)


@dataclass(frozen=True, slots=True)
class _Table:
    """A checked table: its position, and its vtable's position and size."""

    pos: int
    vtable: int
    vtable_size: int
    size: int


class _Checker:
    """Bounds checks over one buffer, and the budget of bytes it may refer to."""

    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.budget = AMPLIFICATION * len(buf)

    def _within(self, at: int, size: int, field: str) -> None:
        if at < 0 or at + size > len(self.buf):
            raise malformed(f"{size} byte(s) at offset {at} lie outside the body", field)

    def _u32(self, at: int, field: str) -> int:
        self._within(at, 4, field)
        return int(_U32.unpack_from(self.buf, at)[0])

    def table(self, at: int, field: str) -> _Table:
        """The table at `at`, its vtable and inline size inside the buffer."""
        self._within(at, 4, field)
        vtable = at - int(_I32.unpack_from(self.buf, at)[0])
        self._within(vtable, _VTABLE_HEADER, field)
        vtable_size, size = (int(_U16.unpack_from(self.buf, vtable + i)[0]) for i in (0, 2))
        if vtable_size < _VTABLE_HEADER or vtable_size % 2 or size < 4:
            raise malformed(f"the table at offset {at} has a corrupt vtable", field)
        self._within(vtable, vtable_size, field)
        self._within(at, size, field)
        return _Table(at, vtable, vtable_size, size)

    def field(self, table: _Table, slot: int, size: int, field: str) -> int | None:
        """The position of field `slot` (`size` bytes inline), None when absent."""
        entry = _VTABLE_HEADER + 2 * slot
        if entry + 2 > table.vtable_size:
            return None
        offset = int(_U16.unpack_from(self.buf, table.vtable + entry)[0])
        if offset == 0:
            return None
        if offset + size > table.size:
            raise malformed(f"field at offset {table.pos + offset} runs past its table", field)
        return table.pos + offset

    def target(self, at: int, field: str) -> int:
        """Where the offset stored at `at` points."""
        return at + self._u32(at, field)

    def vector(self, at: int, element_size: int, field: str, *, text: bool = False) -> int:
        """Check the vector (or, `text`, the string) at `at`; its length."""
        length = self._u32(at, field)
        extent = length * element_size + (1 if text else 0)
        self._within(at + 4, extent, field)
        if text and self.buf[at + 4 + length] != 0:
            raise malformed(f"the string at offset {at} is not NUL-terminated", field)
        self.budget -= extent
        if self.budget < 0:
            raise malformed(
                f"it refers to more than {AMPLIFICATION} times its own size of data", field
            )
        return length

    def elements(self, at: int, field: str) -> list[int]:
        """The targets of the vector of offsets (strings or tables) at `at`."""
        count = self.vector(at, _OFFSET, field)
        return [self.target(at + 4 + _OFFSET * i, f"{field}[{i}]") for i in range(count)]


def verify_request(buf: bytes) -> int:
    """Check that `buf` is a `Request` GraphPipe can read; the kind of request it holds."""
    if len(buf) < 8:  # a root offset and the smallest table
        raise malformed(f"{len(buf)} byte(s) are too few for a Request", "body")
    check = _Checker(buf)
    request = check.table(check.target(0, "body"), "Request")
    kind_at = check.field(request, 0, 1, "Request.req_type")
    kind = 0 if kind_at is None else buf[kind_at]
    value_at = check.field(request, 1, _OFFSET, "Request.req")
    if kind not in (REQ_INFER, REQ_METADATA) or value_at is None:
        raise malformed(
            f"the Request holds neither an InferRequest nor a MetadataRequest (req_type {kind})",
            "Request.req",
        )
    message = check.table(check.target(value_at, "Request.req"), "Request.req")
    if kind == REQ_INFER:
        _verify_infer(check, message)
    return kind


def _verify_infer(check: _Checker, infer: _Table) -> None:
    config = check.field(infer, 0, _OFFSET, "config")
    if config is not None:
        check.vector(check.target(config, "config"), 1, "config", text=True)
    for slot, name in ((1, "input_names"), (3, "output_names")):
        names = check.field(infer, slot, _OFFSET, name)
        if names is not None:
            for i, at in enumerate(check.elements(check.target(names, name), name)):
                check.vector(at, 1, f"{name}[{i}]", text=True)
    tensors = check.field(infer, 2, _OFFSET, "input_tensors")
    if tensors is not None:
        for i, at in enumerate(
            check.elements(check.target(tensors, "input_tensors"), "input_tensors")
        ):
            _verify_tensor(check, check.table(at, f"input_tensors[{i}]"), f"input_tensors[{i}]")


def _verify_tensor(check: _Checker, tensor: _Table, field: str) -> None:
    check.field(tensor, 0, 1, f"{field}.type")
    for slot, size, name in ((1, 8, "shape"), (2, 1, "data")):
        at = check.field(tensor, slot, _OFFSET, f"{field}.{name}")
        if at is not None:
            check.vector(check.target(at, f"{field}.{name}"), size, f"{field}.{name}")
    strings = check.field(tensor, 3, _OFFSET, f"{field}.string_val")
    if strings is not None:
        where = f"{field}.string_val"
        for i, at in enumerate(check.elements(check.target(strings, where), where)):
            check.vector(at, 1, f"{where}[{i}]", text=True)
