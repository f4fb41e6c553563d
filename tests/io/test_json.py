"""tljax.io.save_json / load_json: floats, arrays and fractions come back exactly."""

import json
import math
import re
from fractions import Fraction

import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from tljax.core import InputError, ParseError
from tljax.io import load_json, save_json


def same_bits(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def test_float64_arrays_survive_bit_for_bit(tmp_path):
    tricky = np.array(
        [
            0.1,
            1 / 3,
            -0.0,
            0.0,
            5e-324,
            2.0**-1074 * 3,
            2.0**-60,
            -(2.0**1023) * 1.5,
            np.inf,
            -np.inf,
            math.pi,
            1e308,
        ]
    )
    rng = np.random.default_rng(0)
    randoms = rng.normal(size=(3, 4)) * 10.0 ** rng.integers(-300, 300, size=(3, 4))
    path = tmp_path / "a.json"
    save_json({"tricky": tricky, "randoms": randoms}, path)
    back = load_json(path)
    assert same_bits(back["tricky"], tricky)
    assert same_bits(back["randoms"], randoms)
    # written as hex floats, the exact spelling of a binary float
    raw = json.loads(path.read_text())
    assert raw["tricky"]["data"][0] == (0.1).hex() == "0x1.999999999999ap-4"
    assert raw["tricky"]["data"][4] == "0x0.0000000000001p-1022"


def test_nan_and_other_dtypes(tmp_path):
    obj = {
        "nan": np.array([np.nan, 1.0]),
        "f32": np.array([[0.1, -3.5e-42]], np.float32),
        "f16": np.array([0.1, 65504.0], np.float16),
        "bf16": np.array([0.1, -2.5], ml_dtypes.bfloat16),
        "ints": np.arange(6, dtype=np.int64).reshape(2, 3) - 2**40,
        "bools": np.array([True, False]),
        "empty": np.zeros((0, 3)),
        "scalar0d": np.array(2.0**-1000),
        "np_scalar": np.float32(0.3),
        "np_int": np.int32(-7),
        "jax": jnp.array([0.25, 0.1], jnp.float32),
    }
    path = tmp_path / "b.json"
    save_json(obj, path)
    back = load_json(path)
    assert np.isnan(back["nan"][0]) and back["nan"][1] == 1.0
    for key in ("f32", "f16", "bf16", "ints", "bools", "empty", "scalar0d"):
        assert same_bits(back[key], obj[key]), key
    assert type(back["np_scalar"]) is np.float32 and back["np_scalar"] == np.float32(0.3)
    assert type(back["np_int"]) is np.int32 and back["np_int"] == -7
    assert same_bits(back["jax"], np.asarray(obj["jax"]))


def test_python_values_fractions_and_structure(tmp_path):
    obj = {
        "verdict": "unsat",
        "count": 3,
        "flag": True,
        "none": None,
        "x": 0.1,
        "inf": float("-inf"),
        "ratio": Fraction(-1, 3),
        "pair": (1, (2.5, "a")),
        "list": [1, [Fraction(7, 2), np.array([0.5])]],
        "objects": np.array([Fraction(1, 3), Fraction(2, 5)], dtype=object),
    }
    path = tmp_path / "c.json"
    save_json(obj, path)
    back = load_json(path)
    assert (
        back["verdict"] == "unsat"
        and back["count"] == 3
        and back["flag"] is True
        and back["none"] is None
    )
    assert back["x"] == 0.1 and back["inf"] == -math.inf
    assert back["ratio"] == Fraction(-1, 3) and isinstance(back["ratio"], Fraction)
    assert back["pair"] == (1, (2.5, "a"))
    assert back["list"][1][0] == Fraction(7, 2) and same_bits(back["list"][1][1], np.array([0.5]))
    assert back["objects"].dtype == object and list(back["objects"]) == [
        Fraction(1, 3),
        Fraction(2, 5),
    ]
    json.loads(path.read_text())  # strict JSON: no NaN/Infinity tokens


def test_unsupported_values_are_refused_with_their_place(tmp_path):
    with pytest.raises(InputError, match=r"cannot store set at root\.a\[1\]"):
        save_json({"a": [1, {2}]}, tmp_path / "x.json")
    with pytest.raises(InputError, match=r"key 3 at root must be a string"):
        save_json({3: 1}, tmp_path / "x.json")
    with pytest.raises(InputError, match=r"dtype complex128 at root\.z"):
        save_json({"z": np.array([1j])}, tmp_path / "x.json")
    assert not (tmp_path / "x.json").exists()


def test_corrupt_json_names_file_line_col(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"a": [1, 2,\n  "b" ')
    with pytest.raises(ParseError, match=re.escape(str(path)) + r":2:7: invalid JSON"):
        load_json(path)
    path.write_text('{"a": {"__tljax__": "martian"}}')
    with pytest.raises(ParseError, match="unknown tag __tljax__='martian'"):
        load_json(path)
