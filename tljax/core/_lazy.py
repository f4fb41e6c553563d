"""Load slow modules on first use, so that `import tljax` stays cheap.

`lazy_exports` gives a package the module-level `__getattr__` / `__dir__` pair (PEP 562) that
resolves a name from its module the first time it is read; `optional_import` loads an optional
dependency when a function first needs it.
"""

from __future__ import annotations

import functools as ft
import importlib
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any

__all__ = ["lazy_exports", "optional_import"]


def lazy_exports(
    package: str, exports: Mapping[str, str], namespace: dict[str, Any]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """`__getattr__` and `__dir__` for a package whose names load on first use.

    **Arguments:**

    - `package`: the package's `__name__`.
    - `exports`: public name -> module holding it (`"._symbolic"` relative to `package`, or an
      absolute module name). A name equal to its module (`"io": ".io"`) is the module itself.
    - `namespace`: the package's `globals()`; a resolved name is cached there, so `__getattr__`
      runs once per name.

    **Returns:** `(__getattr__, __dir__)`, to assign at module level.
    """

    def __getattr__(name: str) -> Any:
        where = exports.get(name)
        if where is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = importlib.import_module(where, package)
        value = module if where.lstrip(".") == name else getattr(module, name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__


@ft.cache
def optional_import(name: str) -> ModuleType | None:
    """The module `name`, imported on the first call; None when it is not installed."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None
