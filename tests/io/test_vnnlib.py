"""tljax.io.load_vnnlib: the shared benchmark properties against an independent regex reading,
hand-written files for every and/or form, and the malformed corpus (errors with file:line:col)."""

import csv
import gzip
import re
from fractions import Fraction

import numpy as np
import pytest

from tljax.core import ParseError, UnsupportedPrimitiveError
from tljax.io import Property, load_vnnlib

NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
BOUND = re.compile(rf"\((<=|>=) X_(\d+) ({NUM})\)")
Y_ATOM = re.compile(rf"\((<=|>=) (Y_\d+|{NUM}) (Y_\d+|{NUM})\)")

# (n_inputs, n_outputs) per benchmark suite; the test suite's files differ per instance
SIZES = {"acasxu": (5, 5), "mnist_fc": (784, 10), "verivital": (784, 10)}
TEST_SIZES = {"test_nano": (1, 1), "test_tiny": (1, 1), "test_small": (1, 1), "test_prop": (5, 5)}


def _benchmark_vnnlibs(benchmarks_dir):
    files = []
    for suite in sorted(p for p in benchmarks_dir.iterdir() if (p / "instances.csv").is_file()):
        with open(suite / "instances.csv") as f:
            names = sorted({row[1] for row in csv.reader(f) if row})
        for name in names:
            path = suite / name
            sizes = SIZES.get(suite.name) or TEST_SIZES[path.stem]
            files.append((path, *sizes))
    return files


def _regex_box(text, n):
    """Independent reading: every (<= X_i c) / (>= X_i c) in the file, as float(c)."""
    lower, upper = np.full(n, -np.inf), np.full(n, np.inf)
    for op, i, value in BOUND.findall(text):
        i, value = int(i), float(value)
        if op == "<=":
            upper[i] = min(upper[i], value)
        else:
            lower[i] = max(lower[i], value)
    return lower, upper


def _regex_unsafe(text):
    """Independent truth of the output condition: an `or` of `(and ...)` lines, else a
    conjunction."""
    if "(or" in text:
        groups = [
            Y_ATOM.findall(line) for line in text.splitlines() if line.strip().startswith("(and")
        ]
    else:
        groups = [Y_ATOM.findall(text)]

    def unsafe(y):
        def value(token):
            return y[int(token[2:])] if token.startswith("Y_") else float(token)

        def holds(atoms):
            return all(
                (value(a) <= value(b)) if op == "<=" else (value(a) >= value(b))
                for op, a, b in atoms
            )

        return any(holds(g) for g in groups)

    return unsafe


@pytest.mark.long  # over 12 s on 2 cores: run by CI's -m long stage
def test_every_benchmark_property_matches_an_independent_reading(benchmarks_dir):
    files = _benchmark_vnnlibs(benchmarks_dir)
    assert len(files) >= 38
    rng = np.random.default_rng(0)
    for path, n_in, n_out in files:
        text = path.read_text()
        prop = load_vnnlib(path, n_in, n_out)
        assert (prop.n_inputs, prop.n_outputs, prop.path) == (n_in, n_out, str(path))
        assert len(prop.input_boxes) == 1 and prop.is_product, path.name
        ((lower, upper),) = prop.input_boxes
        expected_lower, expected_upper = _regex_box(text, n_in)
        assert np.array_equal(lower, expected_lower), path.name
        assert np.array_equal(upper, expected_upper), path.name
        assert lower.dtype == upper.dtype == np.float64
        # output side: random outputs, plus outputs near the constraint boundaries
        centre = (lower + upper) / 2
        ys = [rng.normal(scale=3.0, size=n_out) for _ in range(200)]
        ys += [np.round(y) for y in ys[:100]]  # ties (Y_i == Y_j) exercise <= vs <
        ys += [np.full(n_out, 3.991125645861615), np.zeros(n_out)]
        unsafe = _regex_unsafe(text)
        for y in ys:
            assert prop.is_counterexample(centre, y) == unsafe(y), (path.name, y)
        assert not prop.is_counterexample(upper + 1.0, ys[0])  # outside the box: never


def test_mnist_disjuncts_are_the_other_labels(benchmarks_dir):
    path = benchmarks_dir / "mnist_fc" / "vnnlib_2022" / "prop_0_0.03.vnnlib"
    text = path.read_text()
    label = int(re.search(r"label: (\d+)", text).group(1))
    prop = load_vnnlib(path, 784, 10)
    assert len(prop.unsafe) == 9
    others = [j for j in range(10) if j != label]
    for (c, d), j in zip(prop.unsafe, others, strict=True):
        expected = np.zeros((1, 10))
        expected[0, label], expected[0, j] = 1.0, -1.0  # Y_j >= Y_label  <=>  Y_label - Y_j <= 0
        assert np.array_equal(c, expected) and np.array_equal(d, [0.0])


def write(tmp_path, text, name="p.vnnlib"):
    path = tmp_path / name
    path.write_text(text)
    return path


DECLS = "".join(f"(declare-const X_{i} Real)\n" for i in range(2)) + "".join(
    f"(declare-const Y_{j} Real)\n" for j in range(3)
)


def test_input_disjunction_with_output_conjunction(tmp_path):
    text = DECLS + (
        "(assert (or (and (>= X_0 0) (<= X_0 1) (>= X_1 -1) (<= X_1 1))\n"
        "            (and (>= X_0 2) (<= X_0 3) (>= X_1 -1) (<= X_1 1))))\n"
        "(assert (<= Y_0 Y_1))\n(assert (>= Y_2 0.5))\n"
    )
    prop = load_vnnlib(write(tmp_path, text), 2, 3)
    assert [(list(lo), list(hi)) for lo, hi in prop.input_boxes] == [
        ([0, -1], [1, 1]),
        ([2, -1], [3, 1]),
    ]
    assert prop.is_product and prop.pairing == ((0,), (0,))
    ((c, d),) = prop.unsafe
    assert np.array_equal(c, [[1, -1, 0], [0, 0, -1]]) and np.array_equal(d, [0, -0.5])
    assert len(prop.cases) == 2 and all(len(disjuncts) == 1 for _, _, disjuncts in prop.cases)
    assert prop.is_counterexample([2.5, 0.0], [0.0, 1.0, 0.5])
    assert not prop.is_counterexample([1.5, 0.0], [0.0, 1.0, 0.5])  # between the boxes
    assert not prop.is_counterexample([0.5, 0.0], [2.0, 1.0, 0.5])


def test_or_of_ands_mixing_inputs_and_outputs(tmp_path):
    text = DECLS + (
        "(assert (or\n"
        "  (and (>= X_0 0) (<= X_0 1) (>= X_1 0) (<= X_1 1) (>= Y_0 Y_1))\n"
        "  (and (>= X_0 0) (<= X_0 1) (>= X_1 0) (<= X_1 1) (>= Y_0 Y_2))\n"
        "  (and (>= X_0 5) (<= X_0 6) (>= X_1 0) (<= X_1 1) (<= Y_2 -1))\n"
        "))\n"
    )
    prop = load_vnnlib(write(tmp_path, text), 2, 3)
    assert len(prop.input_boxes) == 2 and len(prop.unsafe) == 3
    assert prop.pairing == ((0, 1), (2,)) and not prop.is_product
    (_, _, dis0), (lo1, hi1, dis1) = prop.cases
    assert list(lo1) == [5, 0] and list(hi1) == [6, 1]
    assert [d.tolist() for _, d in dis0] == [[0.0], [0.0]]
    assert np.array_equal(dis1[0][0], [[0, 0, 1]]) and np.array_equal(dis1[0][1], [-1])
    assert prop.is_counterexample([0.5, 0.5], [1, 0, 2])  # Y_0 >= Y_1 in the first box
    assert not prop.is_counterexample([0.5, 0.5], [0, 1, 2])
    assert prop.is_counterexample([5.5, 0.5], [0, 1, -2])  # Y_2 <= -1 in the second box
    # the pairing matters: Y_0 >= Y_1 is unsafe in the first box only
    assert not prop.is_counterexample([5.5, 0.5], [5, 1, 2])


def test_output_or_inside_and_expands_to_dnf(tmp_path):
    text = DECLS + (
        "(assert (and (>= X_0 0) (<= X_0 1) (>= X_1 0) (<= X_1 1)))\n"
        "(assert (and (or (<= Y_0 0) (<= Y_1 0)) (or (<= Y_2 0) (>= Y_2 5))))\n"
    )
    prop = load_vnnlib(write(tmp_path, text), 2, 3)
    assert len(prop.unsafe) == 4 and prop.is_product
    rows = {tuple(map(tuple, c)) + tuple(d) for c, d in prop.unsafe}
    assert ((1, 0, 0), (0, 0, 1), 0, 0) in rows and ((0, 1, 0), (0, 0, -1), 0, -5) in rows


def test_linear_terms_strict_and_equal(tmp_path):
    text = DECLS + (
        "; comment line (with parens) )(\n"
        "(assert (= X_0 0.25)) (assert (< -1 X_1)) (assert (< (* 2 X_1) 3))\n"
        "(assert (<= (+ Y_0 (* 2 Y_1) (- Y_2 0.5)) 1e-1))\n"
        "(assert (> (* -1.5E0 Y_0) (- (/ Y_1 4) 2.5e+1 (- Y_2))))\n"
    )
    prop = load_vnnlib(write(tmp_path, text), 2, 3)
    ((lower, upper),) = prop.input_boxes
    assert list(lower) == [0.25, -1.0] and list(upper) == [0.25, 1.5]
    ((c, d),) = prop.unsafe
    # Y_0 + 2 Y_1 + Y_2 - 0.5 <= 0.1 ; Y_1/4 - 25 + Y_2 < -1.5 Y_0
    #   ->  1.5 Y_0 + 0.25 Y_1 + Y_2 <= 25
    assert np.array_equal(c, [[1, 2, 1], [1.5, 0.25, 1]])
    assert np.array_equal(d, [float(Fraction("0.1") + Fraction("0.5")), 25.0])


def test_outward_rounding_contains_the_decimal_box(tmp_path):
    text = (
        DECLS
        + "(assert (>= X_0 0.1)) (assert (<= X_0 0.3)) (assert (>= X_1 0)) (assert (<= X_1 "
          "1))\n(assert (<= Y_0 0.7))\n"
    )
    path = write(tmp_path, text)
    nearest = load_vnnlib(path, 2, 3)
    outward = load_vnnlib(path, 2, 3, rounding="outward")
    ((lo_n, hi_n),) = nearest.input_boxes
    ((lo_o, hi_o),) = outward.input_boxes
    assert lo_n[0] == 0.1 and hi_n[0] == 0.3
    assert Fraction(lo_o[0]) <= Fraction("0.1") and Fraction(hi_o[0]) >= Fraction("0.3")
    assert Fraction(outward.unsafe[0][1][0]) >= Fraction("0.7")
    assert lo_o[1] == 0 and hi_o[1] == 1  # exact values are not widened


def test_gzip_is_read_transparently(tmp_path, benchmarks_dir):
    source = benchmarks_dir / "acasxu" / "vnnlib" / "prop_2.vnnlib"
    packed = tmp_path / "prop_2.vnnlib.gz"
    packed.write_bytes(gzip.compress(source.read_bytes()))
    plain, zipped = load_vnnlib(source, 5, 5), load_vnnlib(packed, 5, 5)
    assert isinstance(zipped, Property)
    for (a, b), (c, d) in zip(plain.input_boxes, zipped.input_boxes, strict=True):
        assert np.array_equal(a, c) and np.array_equal(b, d)
    assert all(
        np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
        for a, b in zip(plain.unsafe, zipped.unsafe, strict=True)
    )


def test_property_arrays_are_read_only(benchmarks_dir):
    prop = load_vnnlib(benchmarks_dir / "acasxu" / "vnnlib" / "prop_1.vnnlib", 5, 5)
    with pytest.raises(ValueError):
        prop.input_boxes[0][0][0] = 3.0
    with pytest.raises(AttributeError):
        prop.n_inputs = 3


# ------------------------------------------------------------------------------------------
# Malformed corpus: each error says what and where (file:line:col)

BOX = "(assert (>= X_0 0)) (assert (<= X_0 1)) (assert (>= X_1 0)) (assert (<= X_1 1))\n"


@pytest.mark.parametrize(
    "name, text, error, message",
    [
        (
            "undeclared",
            DECLS + BOX + "(assert (<= Y_3 0))\n",
            ParseError,
            r"p\.vnnlib:7:13: undeclared variable 'Y_3'",
        ),
        (
            "unmatched_close",
            DECLS + BOX + "(assert (<= Y_0 0)))\n",
            ParseError,
            r"p\.vnnlib:7:20: unmatched '\)'",
        ),
        (
            "unclosed_open",
            DECLS + BOX + "(assert (<= Y_0 0)\n",
            ParseError,
            r"p\.vnnlib:7:1: '\(' is never closed",
        ),
        (
            "empty_box",
            DECLS + BOX + "(assert (>= X_1 2))\n(assert (<= Y_0 0))\n",
            ParseError,
            r"empty input box: X_1: lower 2\.0 \(at .*p\.vnnlib:7:9\) > upper 1\.0 \(at "
            r".*p\.vnnlib:6:",
        ),
        (
            "missing_bound",
            DECLS
            + "(assert (>= X_0 0)) (assert (<= X_0 1)) (assert (>= X_1 0))\n(assert (<= Y_0 0))\n",
            ParseError,
            r"p\.vnnlib:6:9: input variable\(s\) X_1 have no upper bound",
        ),
        (
            "mixed",
            DECLS + BOX + "(assert (<= X_0 Y_0))\n",
            UnsupportedPrimitiveError,
            r"p\.vnnlib:7:9: a constraint mixes input",
        ),
        (
            "nonlinear",
            DECLS + BOX + "(assert (<= (* Y_0 Y_1) 0))\n",
            UnsupportedPrimitiveError,
            r"p\.vnnlib:7:13: product of variables",
        ),
        (
            "multi_x",
            DECLS + BOX + "(assert (<= (+ X_0 X_1) 1))\n",
            UnsupportedPrimitiveError,
            r"over several variables \(X_0, X_1\)",
        ),
        (
            "unknown_op",
            DECLS + BOX + "(assert (<== Y_0 0))\n",
            ParseError,
            r"p\.vnnlib:7:9: unknown operator '<=='",
        ),
        (
            "not",
            DECLS + BOX + "(assert (not (<= Y_0 0)))\n",
            UnsupportedPrimitiveError,
            r"p\.vnnlib:7:9: 'not' is not supported",
        ),
        (
            "bad_sort",
            "(declare-const X_0 Int)\n",
            ParseError,
            r"p\.vnnlib:1:20: variable X_0 has sort 'Int'",
        ),
        (
            "bad_name",
            "(declare-const Z_0 Real)\n",
            ParseError,
            r"p\.vnnlib:1:16: variable 'Z_0' is not named X_i",
        ),
        (
            "duplicate",
            DECLS + "(declare-const X_1 Real)\n",
            ParseError,
            r"p\.vnnlib:6:16: X_1 is declared twice \(first at .*p\.vnnlib:2:16\)",
        ),
        ("no_asserts", DECLS, ParseError, r"no assertions"),
        (
            "unknown_command",
            DECLS + "(define-fun f () Real 0)\n",
            ParseError,
            r"p\.vnnlib:6:1: unsupported command 'define-fun'",
        ),
    ],
)
def test_malformed_file_errors_name_file_line_col(tmp_path, name, text, error, message):
    path = write(tmp_path, text)
    with pytest.raises(error, match=message):
        load_vnnlib(path, 2, 3)


def test_wrong_variable_counts(tmp_path):
    path = write(tmp_path, DECLS + BOX + "(assert (<= Y_0 0))\n")
    with pytest.raises(
        ParseError,
        match=r"p\.vnnlib:\d+:\d+: the file declares 2 X variables \(X_0\.\.X_1\) but n_inputs=3",
    ):
        load_vnnlib(path, 3, 3)
    with pytest.raises(ParseError, match=r"declares 3 Y variables \(Y_0\.\.Y_2\) but n_outputs=10"):
        load_vnnlib(path, 2, 10)
    gap = write(
        tmp_path,
        "(declare-const X_0 Real)(declare-const X_2 Real)(declare-const Y_0 Real)",
        "gap.vnnlib",
    )
    with pytest.raises(
        ParseError,
        match=(
            r"declares 2 X variables \(X_0\.\.X_2\) but n_inputs=2; missing \['X_1'\]; "
            r"extra \['X_2'\]"
        ),
    ):
        load_vnnlib(gap, 2, 1)


def test_corrupt_gzip_names_the_file(tmp_path):
    path = tmp_path / "bad.vnnlib.gz"
    path.write_bytes(gzip.compress(b"(declare-const X_0 Real)" * 20)[:30])
    with pytest.raises(ParseError, match=r"bad\.vnnlib\.gz: corrupt gzip data"):
        load_vnnlib(path, 1, 1)


def test_truncated_benchmark_file_reports_the_open_paren(tmp_path, benchmarks_dir):
    text = (benchmarks_dir / "mnist_fc" / "vnnlib_2022" / "prop_0_0.03.vnnlib").read_text()
    cut = text.index("(assert (or")
    path = write(tmp_path, text[: cut + 40], "cut.vnnlib")
    line = text[:cut].count("\n") + 1
    with pytest.raises(ParseError, match=rf"cut\.vnnlib:{line}:1: '\(' is never closed"):
        load_vnnlib(path, 784, 10)
