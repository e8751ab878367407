"""Strict CBOR: scan every header before decoding, then map CBOR to and from dataclasses.

A payload is checked against its cap, then :func:`_scan` walks every CBOR header
without building anything (declared lengths against the bytes that remain, item
counts, nesting, no tags or indefinite lengths), and only then does ``cbor2`` build
it. :func:`_build` turns the decoded map into a dataclass by its type hints,
rejecting missing, unknown and mistyped fields with the field's path.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from typing import Any

import cbor2

from edge_client.protocol.limits import (
    MAX_DEPTH,
    MAX_ITEMS,
    MalformedMessage,
    MessageTooLarge,
    _fail,
    _short,
)


def _head(data: bytes, pos: int, kind: str) -> tuple[int, int, int]:
    """Read the CBOR item header at ``pos``: (major type, argument, position after it)."""
    if pos >= len(data):
        _fail(kind, f"truncated at byte {pos}")
    major, info = data[pos] >> 5, data[pos] & 31
    if info >= 28 or (major == 7 and info not in (20, 21, 22, 25, 26, 27)):
        _fail(kind, f"unsupported CBOR item (major {major}, info {info}) at byte {pos}")
    if info < 24:
        return major, info, pos + 1
    end = pos + 1 + (1 << (info - 24))
    if end > len(data):
        _fail(kind, f"truncated at byte {pos + 1}")
    return major, int.from_bytes(data[pos + 1:end], "big"), end


def _scan(data: bytes, kind: str) -> None:
    """Walk every CBOR header without building anything; reject what we never send.

    Rejected: tags (bignums, shared references, regexes ...), indefinite lengths,
    simple values other than false/true/null, nesting deeper than MAX_DEPTH,
    more than MAX_ITEMS items, declared lengths beyond the remaining bytes.
    """
    pos, items, pending = 0, 0, [1]  # pending: items still to read at each open level
    while pending:
        if pending[-1] == 0:
            pending.pop()
            continue
        pending[-1] -= 1
        items += 1
        if items > MAX_ITEMS or len(pending) > MAX_DEPTH + 1:
            _fail(kind, "too many or too deeply nested CBOR items", MessageTooLarge)
        major, arg, pos = _head(data, pos, kind)
        left = len(data) - pos
        if major == 6:
            _fail(kind, f"CBOR tags are not allowed (tag {arg})")
        if major in (2, 3):
            if arg > left:
                _fail(kind, f"declared length {arg} exceeds the {left} bytes left")
            pos += arg
        elif major in (4, 5):
            count = arg * (2 if major == 5 else 1)
            if count > left:  # every item takes at least one byte
                _fail(kind, f"declared {count} items but only {left} bytes left")
            pending.append(count)
    if pos != len(data):
        _fail(kind, f"{len(data) - pos} trailing bytes after the message")


def _load(data: bytes, limit: int, kind: str) -> Any:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        _fail(kind, f"payload must be bytes, not {type(data).__name__}")
    if len(data) > limit:
        _fail(kind, f"{len(data)} bytes exceeds the cap of {limit}", MessageTooLarge)
    if len(data) == 0:
        _fail(kind, "empty payload (a cleared retained topic?)")
    data = bytes(data)
    _scan(data, kind)
    try:
        return cbor2.loads(data, allow_indefinite=False, allow_duplicate_keys=False,
                           strict_hashable_types=True, max_depth=MAX_DEPTH + 2)
    except (cbor2.CBORError, ValueError, TypeError, OverflowError, RecursionError) as error:
        _fail(kind, f"invalid CBOR: {_short(str(error))}")


def _to_wire(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _to_wire(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple):
        return [_to_wire(item) for item in value]
    if isinstance(value, dict):
        return {key: _to_wire(item) for key, item in value.items()}
    return value


@functools.cache
def _schema(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _from_wire(tp: Any, value: Any, path: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        inner = next(a for a in args if a is not type(None))
        return None if value is None else _from_wire(inner, value, path)
    if origin is tuple:
        items = _expect(value, list, path)
        return tuple(_from_wire(args[0], item, f"{path}[{i}]") for i, item in enumerate(items))
    if origin is dict:
        mapping = _expect(value, dict, path)
        return {_expect(k, str, f"{path} key"): _from_wire(args[1], v, f"{path}[{_short(k)}]")
                for k, v in mapping.items()}
    if dataclasses.is_dataclass(tp):
        return _build(typing.cast(type, tp), value, path)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if tp is int and isinstance(value, bool):
        _fail(path, "expected int, got bool")
    return _expect(value, tp, path)


def _expect(value: Any, tp: type, path: str) -> Any:
    if not isinstance(value, tp):
        _fail(path, f"expected {tp.__name__}, got {type(value).__name__}")
    return value


def _build(cls: type, value: Any, path: str, *, nested: bool = True) -> Any:
    """Build dataclass ``cls`` from decoded CBOR ``value``, naming ``path`` in any error.

    ``nested=False`` is for a top-level :class:`~edge_client.protocol.Message`, whose
    own validation already names its kind, so its errors are not prefixed again.
    """
    body = _expect(value, dict, path)
    schema = _schema(cls)
    missing, extra = schema.keys() - body.keys(), body.keys() - schema.keys()
    if missing:
        _fail(path, f"missing field(s) {sorted(missing)}")
    if extra:
        _fail(path, f"unknown field(s) {_short(sorted(map(str, extra)))}")
    kwargs = {name: _from_wire(tp, body[name], f"{path}.{name}") for name, tp in schema.items()}
    try:
        return cls(**kwargs)
    except MalformedMessage as error:
        if not nested:
            raise
        raise type(error)(f"{path}.{error}") from None
