"""JSON files that keep numbers exact: float arrays as hex floats, fractions as `n/d`.

Certificates and verdicts are checked exactly, so a bound must read back as the very float that
was written. `float.hex` spells every binary float exactly (dyadic rationals survive), whatever its
width (float16/32/64, bfloat16), and `inf`/`nan` too.
"""

from __future__ import annotations

import json
import os
from fractions import Fraction
from typing import Any

import ml_dtypes
import numpy as np

from ._errors import InputError, ParseError

_TAG = "__tljax__"


def _dtype(name: str) -> np.dtype:
    try:
        return np.dtype(name)
    except TypeError:
        # bfloat16, float8_*: numpy knows them by their ml_dtypes type
        return np.dtype(getattr(ml_dtypes, name))


def _kind(dtype: np.dtype) -> str:
    """numpy's kind letter, with ml_dtypes' floats (bfloat16, float8_*) counted as 'f'."""
    if dtype.kind != "V":
        return dtype.kind
    try:
        ml_dtypes.finfo(dtype)
        return "f"
    except (ImportError, ValueError, TypeError):
        return dtype.kind


def _encode_scalar(value, kind: str):
    if kind == "f":
        return float(value).hex()
    if kind == "b":
        return bool(value)
    if kind in "iu":
        return int(value)
    return _encode(value, "array element")


def _encode(obj: Any, where: str):
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int) and not isinstance(obj, np.integer):
        return obj
    if isinstance(obj, float):
        # finite floats: json writes repr(), which reads back exactly
        return obj if np.isfinite(obj) else {_TAG: "float", "hex": obj.hex()}
    if isinstance(obj, Fraction):
        return {_TAG: "fraction", "value": f"{obj.numerator}/{obj.denominator}"}
    if isinstance(obj, np.generic):
        kind = _kind(obj.dtype)
        if kind not in "fbiu":
            raise InputError(
                f"save_json: numpy scalar of dtype {obj.dtype} at {where} is not supported"
            )
        return {_TAG: "scalar", "dtype": obj.dtype.name, "value": _encode_scalar(obj, kind)}
    if isinstance(obj, np.ndarray) or (hasattr(obj, "__array__") and hasattr(obj, "dtype")):
        arr = np.asarray(obj)  # jax arrays come back as numpy arrays
        kind = _kind(arr.dtype)
        if kind not in "fbiuO":
            raise InputError(
                f"save_json: array of dtype {arr.dtype} at {where} is not supported (use float, "
                "int, bool or object)"
            )
        data = (
            [_encode_scalar(v, kind) for v in arr.reshape(-1).tolist()]
            if kind != "O"
            else [_encode(v, f"{where}[{i}]") for i, v in enumerate(arr.reshape(-1))]
        )
        return {_TAG: "ndarray", "dtype": arr.dtype.name, "shape": list(arr.shape), "data": data}
    if isinstance(obj, dict):
        out = {}
        for key, value in obj.items():
            if not isinstance(key, str) or key == _TAG:
                raise InputError(
                    f"save_json: key {key!r} at {where} must be a string other than {_TAG!r}"
                )
            out[key] = _encode(value, f"{where}.{key}")
        return out
    if isinstance(obj, tuple):
        return {_TAG: "tuple", "items": [_encode(v, f"{where}[{i}]") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    raise InputError(
        f"save_json: cannot store {type(obj).__name__} at {where}; use dicts with string keys, "
        "lists, tuples, str, int, float, bool, None, Fraction and numpy/jax arrays"
    )


def _decode(obj: Any, path: str):
    if isinstance(obj, list):
        return [_decode(v, path) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if _TAG not in obj:
        return {k: _decode(v, path) for k, v in obj.items()}
    kind = obj[_TAG]
    if kind not in ("float", "fraction", "tuple", "scalar", "ndarray"):
        raise ParseError(
            f"{path}: unknown tag {_TAG}={kind!r}; was the file written by tljax.io.save_json?"
        )
    try:
        if kind == "float":
            return float.fromhex(obj["hex"])
        if kind == "fraction":
            return Fraction(obj["value"])
        if kind == "tuple":
            return tuple(_decode(v, path) for v in obj["items"])
        dtype = _dtype(obj["dtype"])
        if kind == "scalar":
            return dtype.type(_decode_scalar(obj["value"], dtype, path))
        if kind == "ndarray":
            data = [_decode_scalar(v, dtype, path) for v in obj["data"]]
            arr = np.empty(len(data), dtype=dtype)
            arr[:] = data
            return arr.reshape(obj["shape"])
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise ParseError(
            f"{path}: malformed tagged value {str(obj)[:120]} ({type(err).__name__}: {err})"
        ) from err
    raise AssertionError(kind)  # unreachable: tags checked above


def _decode_scalar(value, dtype: np.dtype, path: str):
    kind = _kind(dtype)
    if kind == "f":
        return float.fromhex(value)
    if kind == "O":
        return _decode(value, path)
    return value


def save_json(obj: Any, path: str | os.PathLike) -> None:
    """Writes `obj` as JSON, keeping every float exact.

    Float arrays and numpy float scalars are stored element-wise as `float.hex` strings with their
    dtype and shape; Python floats as JSON numbers (exact through `repr`), `inf`/`nan` tagged;
    `Fraction`s as `"n/d"`; tuples stay tuples. Jax arrays are stored like numpy arrays (they
    load back as numpy arrays). The write is atomic (temporary file, then rename).

    Args:
        obj: nested dicts (string keys), lists, tuples, None, bool, int, float, str, `Fraction`,
            numpy scalars and arrays (float, int, bool, or object arrays of these).
        path: the output file.

    Raises:
        InputError: an unsupported type or a non-string dict key (the message gives its place).

    Examples:
        >>> save_json({"lower": np.array([0.1, -2.0**-60])}, "bounds.json")  # doctest: +SKIP
        >>> load_json("bounds.json")["lower"][1] == -2.0**-60  # doctest: +SKIP
        True
    """
    text = json.dumps(_encode(obj, "root"), allow_nan=False)
    path = os.fspath(path)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text + "\n")
    os.replace(tmp, path)


def load_json(path: str | os.PathLike) -> Any:
    """Reads a file written by `save_json`, restoring arrays, dtypes, floats and fractions exactly.

    Args:
        path: a JSON file written by `save_json` (plain JSON files load too).

    Returns:
        The stored object; arrays come back as numpy arrays of the stored dtype and shape.

    Raises:
        ParseError: invalid JSON (with line and column) or malformed tagged values.

    Examples:
        >>> cert = load_json("certificate.json")  # doctest: +SKIP
    """
    path = os.fspath(path)
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as err:
        raise ParseError(
            f"{path}:{err.lineno}:{err.colno}: invalid JSON ({err.msg}); the file is truncated or "
            "corrupt"
        ) from err
    return _decode(raw, path)
