"""Names of a package imported on first use (PEP 562), from the modules that define them.

A package that lists its public names this way costs nothing to import, adds no import edge
to the modules it names (so the layers below can import each other without circles), and
still answers ``dir()`` and ``from package import name`` the ordinary way.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(
    package: str, exports: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``, which exports ``{name: module}``.

    A name is imported from its module on first access (a name mapped to the submodule
    ``package.name`` is that submodule) and then kept in the package's namespace, so the
    next access is an ordinary attribute lookup.
    """

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        if module == f"{package}.{name}":  # a submodule, named for its own sake
            value = importlib.import_module(module)
        else:
            value = getattr(importlib.import_module(module), name)
        vars(importlib.import_module(package))[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(exports)

    return __getattr__, __dir__
