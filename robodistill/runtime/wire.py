"""The msgpack-numpy wire format of openpi's policy server: nested dicts and lists of numbers, strings and arrays.

An array travels as the map {b"__ndarray__": True, b"data": raw bytes, b"dtype": dtype.str, b"shape": shape}, a numpy
scalar as {b"__npgeneric__": True, b"data": its Python value, b"dtype": dtype.str}, so that an openpi client or
server reads what we write and the other way round.
"""

from __future__ import annotations

from typing import Any

import msgpack
import numpy as np

_REFUSED_KINDS = ("V", "O", "c")  # structured, object and complex dtypes: openpi refuses them too


def _encode(obj: Any) -> Any:
    """msgpack's `default` hook: numpy arrays and scalars to their wire maps."""
    if isinstance(obj, (np.ndarray, np.generic)) and obj.dtype.kind in _REFUSED_KINDS:
        raise ValueError(f"cannot send numpy dtype {obj.dtype} (structured, object and complex arrays are refused)")
    if isinstance(obj, np.ndarray):
        return {b"__ndarray__": True, b"data": obj.tobytes(), b"dtype": obj.dtype.str, b"shape": list(obj.shape)}
    if isinstance(obj, np.generic):
        return {b"__npgeneric__": True, b"data": obj.item(), b"dtype": obj.dtype.str}
    # strict_types sends subclasses of the built-in types here (and tuples): pack them as their base type
    if isinstance(obj, (tuple, list)):
        return list(obj)
    if isinstance(obj, dict):
        return dict(obj)
    for base in (bool, int, float, str, bytes):
        if isinstance(obj, base):
            return base(obj)
    raise TypeError(f"cannot send a {type(obj).__name__} (send numbers, strings, bytes, arrays, lists and dicts)")


def _decode(obj: dict) -> Any:
    """msgpack's `object_hook`: wire maps back to numpy arrays and scalars."""
    if b"__ndarray__" in obj:
        dtype = np.dtype(obj[b"dtype"])
        # a copy: decoded arrays are writable and own their memory (torch.as_tensor warns on read-only arrays)
        return np.frombuffer(obj[b"data"], dtype=dtype).reshape(obj[b"shape"]).copy()
    if b"__npgeneric__" in obj:
        return np.dtype(obj[b"dtype"]).type(obj[b"data"])
    return obj


def packb(obj: Any) -> bytes:
    """Serialise `obj` (dicts, lists, numbers, strings, numpy arrays and scalars) to msgpack-numpy bytes."""
    # strict_types: a np.float64 (a float subclass) keeps its dtype instead of arriving as a Python float
    return msgpack.packb(obj, default=_encode, strict_types=True)


def unpackb(data: bytes) -> Any:
    """Deserialise msgpack-numpy bytes; arrays come back as writable copies. Malformed data raises ValueError."""
    try:
        return msgpack.unpackb(data, object_hook=_decode)
    except Exception as exc:  # msgpack raises several types (ExtraData, FormatError, TypeError ...) on garbage
        detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise ValueError(f"not a msgpack-numpy message ({detail})") from exc
