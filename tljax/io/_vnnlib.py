"""VNN-LIB 1.0 reader: input boxes and an unsafe output set in disjunctive normal form.

A VNN-LIB file declares `X_i` (element i of the network input, flattened row-major) and `Y_j`
(element j of the flattened output) and asserts a formula that describes the UNSAFE set: a point
that satisfies every assertion is a counterexample. This module reads the usual fragment:
`declare-const ... Real`, `assert` over `and` / `or` of comparisons (`<=`, `>=`, `<`, `>`, `=`)
between linear terms (`+`, `-`, `*` and `/` by constants, decimal and scientific numbers).

Strict comparisons are read as non-strict: the closed set contains the open one, so a proof that
the closed unsafe set is empty (unsat) also holds for the file. Numbers are read exactly (as
fractions) and rounded once to float64 at the end.
"""

from __future__ import annotations

import dataclasses
import gzip
import itertools
import os
import re
from fractions import Fraction
from typing import Any

import numpy as np

from ..core import InputError, ParseError, ShapeMismatchError, UnsupportedPrimitiveError

_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_VARIABLE = re.compile(r"([XY])_(\d+)")
_IGNORED_COMMANDS = {
    "set-logic",
    "set-info",
    "set-option",
    "check-sat",
    "get-model",
    "get-value",
    "exit",
}
_MAX_DISJUNCTS = 200_000
_NON_NUMBERS = {"nan", "inf", "infinity", "+inf", "-inf"}


@dataclasses.dataclass(frozen=True, eq=False)
class Property:
    """A VNN-LIB property: input boxes and the unsafe output set.

    The unsafe set is the union over `cases` of `{x in [lower, upper] : C_k @ f(x) <= d_k for some
    k}`. For the common file shapes this is a product, `input_boxes` x `unsafe`: every box pairs
    with every unsafe disjunct (`is_product` is True). When a file pairs different output
    conditions with different boxes (an `or` of `and`s that mix X and Y), `pairing[i]` lists which
    disjuncts of `unsafe` apply to `input_boxes[i]`, and `cases` spells the pairs out; reading
    `input_boxes` x `unsafe` alone then over-approximates the unsafe set, which is still sound for
    proving unsat.

    Attributes:
        input_boxes: tuple of `(lower, upper)`, float64 arrays of shape `(n_inputs,)` over the
            input flattened row-major; distinct boxes in file order.
        unsafe: tuple of `(C, d)` with `C` of shape `(m, n_outputs)` and `d` of shape `(m,)`:
            disjunct k is the polytope `{y : C @ y <= d}` (`>=` is stored negated; `m = 0` means
            every output is unsafe). Distinct disjuncts in file order.
        pairing: for each box, the indices into `unsafe` that apply to it.
        n_inputs: number of `X_i` (the flattened input size).
        n_outputs: number of `Y_j`.
        path: the file read.

    Examples:
        >>> prop = tljax.io.load_vnnlib("prop_1.vnnlib", 5, 5)  # doctest: +SKIP
        >>> (lower, upper), = prop.input_boxes  # doctest: +SKIP
        >>> for lower, upper, disjuncts in prop.cases: ...  # doctest: +SKIP
    """

    input_boxes: tuple[tuple[np.ndarray, np.ndarray], ...]
    unsafe: tuple[tuple[np.ndarray, np.ndarray], ...]
    pairing: tuple[tuple[int, ...], ...]
    n_inputs: int
    n_outputs: int
    path: str

    @property
    def cases(self) -> list[tuple[np.ndarray, np.ndarray, list[tuple[np.ndarray, np.ndarray]]]]:
        """Sub-problems `(lower, upper, [(C, d), ...])`: the unsafe set is their union.

        Each sub-problem asks whether some x in `[lower, upper]` has `C @ f(x) <= d` for one of
        its `(C, d)`; the property holds (unsat) when no sub-problem has such an x.
        """
        return [
            (lower, upper, [self.unsafe[k] for k in pairs])
            for (lower, upper), pairs in zip(self.input_boxes, self.pairing, strict=True)
        ]

    @property
    def is_product(self) -> bool:
        """Whether every box pairs with every unsafe disjunct (then `cases` adds nothing)."""
        everything = tuple(range(len(self.unsafe)))
        return all(pairs == everything for pairs in self.pairing)

    def is_counterexample(self, x: Any, y: Any) -> bool:
        """Whether input `x` (any shape, flattened row-major) and output `y` violate the property.

        Exact test of the stored float64 constraints (no tolerance); `y` should be the network's
        output at `x`.

        Examples:
            >>> prop.is_counterexample(x, fn(params, x))  # doctest: +SKIP
        """
        x = np.asarray(x, np.float64).reshape(-1)
        y = np.asarray(y, np.float64).reshape(-1)
        if x.size != self.n_inputs or y.size != self.n_outputs:
            raise ShapeMismatchError(
                f"Property.is_counterexample: x has {x.size} and y {y.size} elements; "
                f"{self.path} has n_inputs={self.n_inputs}, n_outputs={self.n_outputs}; pass the "
                "network's input and its output at that input"
            )
        for lower, upper, disjuncts in self.cases:
            inside = np.all(lower <= x) and np.all(x <= upper)
            if inside and any(np.all(c @ y <= d) for c, d in disjuncts):
                return True
        return False


# ---------------------------------------------------------------------------------------------
# Tokens and s-expressions


class _Atom:
    """A token: a symbol, a number, or (with `paren`) a structural '(' / ')'."""

    __slots__ = ("col", "line", "paren", "text")  # plain slots: files have ~10^5 tokens

    def __init__(self, text: str, line: int, col: int, paren: bool = False):
        self.text, self.line, self.col, self.paren = text, line, col, paren


class _List:
    """A parenthesised s-expression and the position of its '('."""

    __slots__ = ("col", "items", "line")

    def __init__(self, items: tuple, line: int, col: int):
        self.items, self.line, self.col = items, line, col


def _where(path: str, node) -> str:
    return f"{path}:{node.line}:{node.col}"


_TOKEN = re.compile(
    r"(?P<paren>[()])|\|(?P<quoted>[^|]*)\||(?P<atom>[^\s();|]+)|(?P<bad>\|)|(?P<comment>;)"
)


def _tokenize(text: str, path: str) -> list[_Atom]:
    """Parentheses and atoms with 1-based line and column; `;` comments run to the line end."""
    tokens = []
    for line, content in enumerate(text.split("\n"), start=1):
        for m in _TOKEN.finditer(content):
            kind = m.lastgroup
            if kind == "comment":
                break
            if kind == "bad":
                raise ParseError(
                    f"{path}:{line}:{m.start() + 1}: unterminated quoted symbol '|' (quoted "
                    "symbols must end on their line)"
                )
            tokens.append(_Atom(m.group(kind), line, m.start() + 1, kind == "paren"))
    return tokens


def _parse_sexprs(tokens: list[_Atom], path: str) -> list:
    """Top-level s-expressions; iterative, so deep nesting cannot hit the recursion limit."""
    stack: list[tuple[_Atom, list]] = []
    top: list = []
    for tok in tokens:
        if tok.paren and tok.text == "(":
            stack.append((tok, []))
        elif tok.paren:
            if not stack:
                raise ParseError(
                    f"{_where(path, tok)}: unmatched ')'; remove it or add the missing '('"
                )
            opener, items = stack.pop()
            node = _List(tuple(items), opener.line, opener.col)
            (stack[-1][1] if stack else top).append(node)
        else:
            (stack[-1][1] if stack else top).append(tok)
    if stack:
        outer, inner = stack[0][0], stack[-1][0]
        raise ParseError(
            f"{_where(path, outer)}: '(' is never closed (end of file reached with {len(stack)} "
            f"open, the innermost at {inner.line}:{inner.col}); add the missing ')' (the file may "
            "be truncated)"
        )
    return top


# ---------------------------------------------------------------------------------------------
# Formulas


class _Constraint:
    """`sum(coeffs[v] * v) <= rhs`, exact; `where` is the comparison's `file:line:col`."""

    __slots__ = ("coeffs", "rhs", "where")

    def __init__(self, coeffs: dict, rhs: Fraction, where: str):
        self.coeffs, self.rhs, self.where = coeffs, rhs, where


class _Reader:
    def __init__(self, path: str, n_inputs: int, n_outputs: int):
        self.path = path
        self.n_inputs = n_inputs
        self.n_outputs = n_outputs
        self.declared: dict[tuple[str, int], str] = {}
        self.numbers: dict[str, Fraction] = {}

    def error(self, node, message: str) -> ParseError:
        return ParseError(f"{_where(self.path, node)}: {message}")

    def head(self, node) -> str:
        if not isinstance(node, _List) or not node.items or not isinstance(node.items[0], _Atom):
            raise self.error(node, f"expected '(operator ...)', got {_show(node)}")
        return node.items[0].text

    def declare(self, node: _List) -> None:
        if len(node.items) != 3 or not all(isinstance(i, _Atom) for i in node.items[1:]):
            raise self.error(node, "expected (declare-const NAME Real)")
        name, sort = node.items[1], node.items[2]
        match = _VARIABLE.fullmatch(name.text)
        if not match:
            raise self.error(
                name,
                f"variable '{name.text}' is not named X_i (input) or Y_j (output) as VNN-LIB "
                "requires",
            )
        if sort.text != "Real":
            raise self.error(
                sort, f"variable {name.text} has sort '{sort.text}'; only Real is supported"
            )
        key = (match.group(1), int(match.group(2)))
        if key in self.declared:
            raise self.error(name, f"{name.text} is declared twice (first at {self.declared[key]})")
        self.declared[key] = _where(self.path, name)

    def check_declarations(self, end) -> None:
        for kind, count, arg in (
            ("X", self.n_inputs, "n_inputs"),
            ("Y", self.n_outputs, "n_outputs"),
        ):
            indices = sorted(i for k, i in self.declared if k == kind)
            if indices != list(range(count)):
                missing = sorted(set(range(count)) - set(indices))
                extra = [i for i in indices if i >= count]
                detail = (
                    f"; missing {[f'{kind}_{i}' for i in missing[:5]]}" if missing and extra else ""
                )
                raise ParseError(
                    f"{self.path}:{end.line}:{end.col}: the file declares {len(indices)} {kind} "
                    f"variables ({_span(kind, indices)}) but {arg}={count}{detail}"
                    f"{'; extra ' + str([f'{kind}_{i}' for i in extra[:5]]) if extra else ''}. "
                    f"Pass the network's flattened {'input' if kind == 'X' else 'output'} size "
                    f"as {arg}, or fix the declarations."
                )

    def formula(self, node):
        """('and'|'or', [children]) or a _Constraint list wrapped as ('and', [...])."""
        op = self.head(node)
        args = node.items[1:]
        if op in ("and", "or"):
            if not args:
                raise self.error(node, f"'{op}' needs at least one argument")
            return (op, [self.formula(a) for a in args])
        if op in ("<=", ">=", "<", ">", "="):
            if len(args) < 2:
                raise self.error(node, f"'{op}' needs two terms, got {len(args)}")
            where = _where(self.path, node)
            if (
                len(args) == 2
                and op != "="
                and isinstance(args[0], _Atom)
                and isinstance(args[1], _Atom)
            ):
                # the common `(<= X_0 0.5)` / `(>= Y_0 Y_4)`: no term algebra needed
                a, b = (args[0], args[1]) if op in ("<=", "<") else (args[1], args[0])
                return ("and", [self.atom_constraint(a, b, where)])
            terms = [self.term(a) for a in args]
            parts = []
            for a, b in itertools.pairwise(terms):  # chains: (<= a b c) is a <= b and b <= c
                if op in ("<=", "<", "="):
                    parts.append(_constraint(a, b, where))
                if op in (">=", ">", "="):
                    parts.append(_constraint(b, a, where))
            return ("and", parts)
        if op == "not":
            raise UnsupportedPrimitiveError(
                f"{_where(self.path, node)}: 'not' is not supported; write the negated comparison "
                "instead (e.g. (>= Y_0 Y_1) for (not (< Y_0 Y_1)))"
            )
        raise self.error(
            node, f"unknown operator '{op}' in an assertion (expected and, or, <=, >=, <, >, =)"
        )

    def number(self, text: str) -> Fraction:
        value = self.numbers.get(text)
        if value is None:
            value = self.numbers[text] = Fraction(text)
        return value

    def atom_constraint(self, a: _Atom, b: _Atom, where: str) -> _Constraint:
        """`a <= b` for two atoms (variables or numbers)."""
        ta, tb = self.term(a), self.term(b)
        if ta[0] and tb[0]:
            ((va, _),), ((vb, _),) = ta[0].items(), tb[0].items()
            coeffs = {va: Fraction(1), vb: Fraction(-1)} if va != vb else {}
            return _Constraint(coeffs, Fraction(0), where)
        if ta[0]:
            return _Constraint(ta[0], tb[1], where)
        if tb[0]:
            ((vb, _),) = tb[0].items()
            return _Constraint({vb: Fraction(-1)}, -ta[1], where)
        return _Constraint({}, tb[1] - ta[1], where)

    def term(self, node) -> tuple[dict, Fraction]:
        """A linear term as (coefficients, constant), exact."""
        if isinstance(node, _Atom):
            if _NUMBER.fullmatch(node.text):
                return {}, self.number(node.text)
            if node.text.lstrip("+-").lower() in _NON_NUMBERS:
                raise self.error(
                    node,
                    f"'{node.text}' is not a number VNN-LIB allows; bounds and coefficients must "
                    "be finite decimal numbers (leave a side unbounded by omitting its assertion)",
                )
            match = _VARIABLE.fullmatch(node.text)
            key = (match.group(1), int(match.group(2))) if match else None
            if key not in self.declared:
                raise self.error(
                    node,
                    f"undeclared variable '{node.text}'; declare it with (declare-const "
                    f"{node.text} Real)",
                )
            return {key: Fraction(1)}, Fraction(0)
        op = self.head(node)
        args = [self.term(a) for a in node.items[1:]]
        if not args:
            raise self.error(node, f"'{op}' needs arguments")
        if op == "+":
            return _combine(args, [1] * len(args))
        if op == "-":
            return (
                _scale(args[0], -1)
                if len(args) == 1
                else _combine(args, [1] + [-1] * (len(args) - 1))
            )
        if op == "*":
            variable = [a for a in args if a[0]]
            if len(variable) > 1:
                raise UnsupportedPrimitiveError(
                    f"{_where(self.path, node)}: product of variables (nonlinear term); only "
                    "products with constants are supported"
                )
            factor = Fraction(1)
            for coeffs, const in args:
                if not coeffs:
                    factor *= const
            return _scale(variable[0], factor) if variable else ({}, factor)
        if op == "/":
            if len(args) != 2 or args[1][0] or args[1][1] == 0:
                raise self.error(node, "'/' must divide a term by a nonzero constant")
            return _scale(args[0], 1 / args[1][1])
        raise self.error(node, f"unknown operator '{op}' in a term (expected +, -, *, /)")


def _show(node) -> str:
    return f"'{node.text}'" if isinstance(node, _Atom) else "'(...)'"


def _span(kind: str, indices: list[int]) -> str:
    if not indices:
        return "none"
    return (
        f"{kind}_{indices[0]}"
        if len(indices) == 1
        else f"{kind}_{indices[0]}..{kind}_{indices[-1]}"
    )


def _scale(term, factor) -> tuple[dict, Fraction]:
    coeffs, const = term
    return {k: v * factor for k, v in coeffs.items()}, const * factor


def _combine(terms, signs) -> tuple[dict, Fraction]:
    coeffs: dict = {}
    const = Fraction(0)
    for (c, k), s in zip(terms, signs, strict=True):
        for var, v in c.items():
            coeffs[var] = coeffs.get(var, 0) + s * v
        const += s * k
    return {k: v for k, v in coeffs.items() if v}, const


def _constraint(lhs, rhs, where: str) -> _Constraint:
    coeffs, const = _combine([lhs, rhs], [1, -1])  # lhs - rhs <= 0
    return _Constraint(coeffs, -const, where)


def _dnf(formula, path: str) -> list[list[_Constraint]]:
    if isinstance(formula, _Constraint):
        return [[formula]]
    op, children = formula
    if op == "or":
        return [conj for child in children for conj in _dnf(child, path)]
    # `or`-free children form one shared base (no quadratic copying); the others multiply out
    base: list[_Constraint] = []
    result: list[list[_Constraint]] = [[]]
    for child in children:
        parts = _dnf(child, path)
        if len(parts) == 1:
            base.extend(parts[0])
            continue
        if len(result) * len(parts) > _MAX_DISJUNCTS:
            raise UnsupportedPrimitiveError(
                f"{path}: the assertions expand to more than {_MAX_DISJUNCTS} disjuncts in "
                "disjunctive normal form; split the property into several files"
            )
        result = [a + b for a in result for b in parts]
    return [base + conj for conj in result]


# ---------------------------------------------------------------------------------------------
# From constraints to boxes and polytopes


def _to_float(value: Fraction, direction: int, where: str = "") -> float:
    """Nearest float64, or rounded down (-1) / up (+1) when the value is not representable."""
    try:
        x = float(value)
    except OverflowError:
        raise ParseError(
            f"{where}: a number of magnitude about 10^{_log10(value)} is outside the float64 "
            "range (|x| <= 1.8e308); use a finite bound float64 can hold (leave a side unbounded "
            "for outputs by omitting the constraint)"
        ) from None
    if direction and Fraction(x) != value and (Fraction(x) < value) == (direction > 0):
        x = float(np.nextafter(x, np.inf if direction > 0 else -np.inf))
    return x


def _log10(value: Fraction) -> int:
    num, den = abs(value.numerator), value.denominator
    return len(str(num)) - len(str(den))


def _compile(c: _Constraint, n_out: int, outward: bool):
    """One constraint -> ("true"|"false"|"lower"|"upper", index, value) or ("row", row, rhs)."""
    kinds = {k for k, _ in c.coeffs}
    if kinds == {"X", "Y"}:
        raise UnsupportedPrimitiveError(
            f"{c.where}: a constraint mixes input (X) and output (Y) variables; only bounds on "
            "inputs and linear constraints on outputs are supported"
        )
    if not kinds:  # constant comparison: true drops out, false kills the disjunct
        return ("true" if 0 <= c.rhs else "false", None, None)
    if kinds == {"X"}:
        if len(c.coeffs) != 1:
            raise UnsupportedPrimitiveError(
                f"{c.where}: an input constraint over several variables "
                f"({', '.join(f'X_{i}' for _, i in sorted(c.coeffs))}); only bounds on single X_i "
                "(boxes) are supported"
            )
        (((_, i), a),) = c.coeffs.items()
        bound = c.rhs if a == 1 else -c.rhs if a == -1 else c.rhs / a
        if a > 0:
            return ("upper", i, _to_float(bound, +1 if outward else 0, c.where))
        return ("lower", i, _to_float(bound, -1 if outward else 0, c.where))
    row = np.zeros(n_out)
    for (_, j), v in c.coeffs.items():
        row[j] = _to_float(v, 0, c.where)
    # up: a larger unsafe set, sound
    return ("row", row, _to_float(c.rhs, +1 if outward else 0, c.where))


def _case(conj: list[_Constraint], n_in: int, n_out: int, path: str, outward: bool, memo: dict):
    """One DNF disjunct -> (lower, upper, C, d), or None when it is trivially infeasible."""
    lower = np.full(n_in, -np.inf)
    upper = np.full(n_in, np.inf)
    lower_at: list[str | None] = [None] * n_in
    upper_at: list[str | None] = [None] * n_in
    rows, rhs = [], []
    for c in conj:
        key = id(c)
        if key not in memo:
            memo[key] = _compile(c, n_out, outward)
        kind, index, value = memo[key]
        if kind == "false":
            return None
        if kind == "upper" and value < upper[index]:
            upper[index], upper_at[index] = value, c.where
        elif kind == "lower" and value > lower[index]:
            lower[index], lower_at[index] = value, c.where
        elif kind == "row":
            rows.append(index)
            rhs.append(value)

    empty = np.flatnonzero(lower > upper)
    if empty.size:
        detail = "; ".join(
            f"X_{i}: lower {float(lower[i])!r} (at {lower_at[i]}) > upper {float(upper[i])!r} (at "
            f"{upper_at[i]})"
            for i in empty[:5]
        )
        raise ParseError(f"{path}: empty input box: {detail}. Fix the bounds in the file.")
    for bounds, side in ((lower, "lower"), (upper, "upper")):
        open_ = np.flatnonzero(~np.isfinite(bounds))
        if open_.size:
            where = conj[0].where if conj else path
            names = ", ".join(f"X_{i}" for i in open_[:8]) + (" ..." if open_.size > 8 else "")
            raise ParseError(
                f"{where}: input variable(s) {names} have no {side} bound in this case (every X_i "
                "needs (>= X_i a) and (<= X_i b)); add the missing bounds to the file."
            )
    c_mat = np.array(rows).reshape(len(rows), n_out)
    return lower, upper, c_mat, np.array(rhs, dtype=np.float64)


def _readonly(*arrays):
    for a in arrays:
        a.setflags(write=False)
    return arrays


def _read_text(path: str) -> str:
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as err:
            raise ParseError(
                f"{path}: corrupt gzip data ({err}); re-download or re-compress the file"
            ) from err
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ParseError(
            f"{path}: not UTF-8 text (byte {err.start}); is this a VNN-LIB file?"
        ) from err


def load_vnnlib(
    path: str | os.PathLike, n_inputs: int, n_outputs: int, *, rounding: str = "nearest"
) -> Property:
    """Reads a VNN-LIB 1.0 property file (plain or gzip-compressed).

    Args:
        path: a `.vnnlib` file, or a gzip-compressed one (detected by content, e.g. `.vnnlib.gz`).
        n_inputs: the network's flattened input size; the file must declare exactly `X_0 ..
            X_{n_inputs-1}`.
        n_outputs: the flattened output size; the file must declare exactly `Y_0 ..
            Y_{n_outputs-1}`.
        rounding: `"nearest"` (default, as VNN-COMP tools read numbers): every number is rounded to
            the nearest float64. `"outward"`: bounds that are not exactly representable are
            rounded to enlarge the box, and output right-hand sides are rounded up, so the stored
            unsafe set contains the file's exactly (sound for proving unsat).

    Returns:
        A `Property`; `prop.cases` lists the `(lower, upper, [(C, d), ...])` sub-problems for
        every file shape: input and output assertions side by side, an `or` over output
        conjunctions, an `or` over input boxes, or an `or` of `and`s mixing both.

    Raises:
        ParseError: malformed file, with `file:line:col`: unbalanced parentheses, undeclared
            variable, declared X/Y count different from `n_inputs`/`n_outputs`, empty box (lower >
            upper), an input without both bounds.
        UnsupportedPrimitiveError: constructs outside the fragment (`not`, nonlinear terms,
            constraints mixing X and Y, input constraints over several variables).

    Examples:
        >>> prop = tljax.io.load_vnnlib("acasxu/vnnlib/prop_1.vnnlib", 5, 5)  # doctest: +SKIP
        >>> lower, upper, disjuncts = prop.cases[0]  # doctest: +SKIP
        >>> disjuncts[0]  # (C, d): unsafe if C @ y <= d, here -y_0 <= -3.99...  # doctest: +SKIP
    """
    if rounding not in ("nearest", "outward"):
        raise InputError(
            f"tljax.io.load_vnnlib: rounding={rounding!r}; use 'nearest' (default) or 'outward'"
        )
    for name, n in (("n_inputs", n_inputs), ("n_outputs", n_outputs)):
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
            raise InputError(
                f"tljax.io.load_vnnlib: {name}={n!r} must be a positive int, the network's "
                f"flattened {'input' if name == 'n_inputs' else 'output'} size"
            )
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InputError(
            f"tljax.io.load_vnnlib: no such file {path!r} (working directory {os.getcwd()!r}); "
            "check the path"
        )
    text = _read_text(path)
    tokens = _tokenize(text, path)
    reader = _Reader(path, int(n_inputs), int(n_outputs))
    asserts = []
    for node in _parse_sexprs(tokens, path):
        command = reader.head(node)
        if command == "declare-const":
            reader.declare(node)
        elif command == "assert":
            if len(node.items) != 2:
                raise reader.error(node, "expected (assert FORMULA)")
            asserts.append(node.items[1])
        elif command not in _IGNORED_COMMANDS:
            raise reader.error(
                node, f"unsupported command '{command}' (expected declare-const or assert)"
            )
    end = tokens[-1] if tokens else _Atom("", 1, 1)
    reader.check_declarations(end)
    if not asserts:
        raise ParseError(
            f"{path}: no assertions; a VNN-LIB property needs input bounds and an unsafe set"
        )

    formula = ("and", [reader.formula(a) for a in asserts])
    boxes: dict[bytes, int] = {}
    disjuncts: dict[bytes, int] = {}
    input_boxes, unsafe, pairing = [], [], []
    memo: dict = {}  # constraints shared by many disjuncts are converted once
    for conj in _dnf(formula, path):
        case = _case(conj, reader.n_inputs, reader.n_outputs, path, rounding == "outward", memo)
        if case is None:
            continue
        lower, upper, c_mat, d = case
        box_key = lower.tobytes() + upper.tobytes()
        if box_key not in boxes:
            boxes[box_key] = len(input_boxes)
            input_boxes.append(_readonly(lower, upper))
            pairing.append([])
        poly_key = c_mat.tobytes() + b"|" + d.tobytes()
        if poly_key not in disjuncts:
            disjuncts[poly_key] = len(unsafe)
            unsafe.append(_readonly(c_mat, d))
        k = disjuncts[poly_key]
        if k not in pairing[boxes[box_key]]:
            pairing[boxes[box_key]].append(k)
    if not input_boxes:
        raise ParseError(
            f"{path}: every case of the assertions is infeasible (constant comparisons are false)"
        )
    return Property(
        input_boxes=tuple(input_boxes),
        unsafe=tuple(unsafe),
        pairing=tuple(tuple(p) for p in pairing),
        n_inputs=reader.n_inputs,
        n_outputs=reader.n_outputs,
        path=path,
    )
