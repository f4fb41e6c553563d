"""Error classes of tljax and the formatter that says where in a program something went wrong.

Every class subclasses a builtin as well, so `except ValueError` in user code keeps working.
"""

from __future__ import annotations


class TljaxError(Exception):
    """Base class of every error tljax raises on purpose."""


class UnsupportedPrimitiveError(TljaxError, NotImplementedError):
    """A semantics has no rule for a primitive (or an ONNX op, a construct) it met."""


class RuleError(TljaxError, RuntimeError):
    """A rule raised while evaluating one equation; the message carries the location."""


class InputError(TljaxError, ValueError):
    """Bad user input: wrong structure, non-array leaves, NaN where exact values are needed, ..."""


class ShapeMismatchError(TljaxError, ValueError):
    """Shapes (or dtypes) of user inputs do not match what the program was traced with."""


class InvalidBoxError(TljaxError, ValueError):
    """An input box is malformed: lower > upper, NaN, mismatched shapes."""


class CertificateError(TljaxError, ValueError):
    """A certificate is malformed (as opposed to merely rejected by the checker)."""


class ParseError(TljaxError, ValueError):
    """A file (ONNX, VNN-LIB, ...) could not be read; the message names file and position."""
