"""Lazy package attributes (PEP 562): a package names what it exports, modules load on use.

Light packages (``hz_ray``, ``hz_ray.backends``, ``actors``) re-export names
from heavy modules (torch, the simulators, the Ray shells) without importing
them until a name is first used.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib import import_module
from typing import Any


def lazy_exports(package: str, namespace: dict[str, Any], exports: Mapping[str, str]
                 ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of a package with lazily imported names.

    Args:
        package: The package's name (for the error message).
        namespace: The package's ``globals()`` (a loaded name is cached there).
        exports: Name -> module that defines it.

    Returns:
        ``(__getattr__, __dir__)`` to assign in the package's ``__init__``.
    """

    def getattr_(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(import_module(module), name)
        namespace[name] = value
        return value

    def dir_() -> list[str]:
        return sorted(set(namespace) | set(exports))

    return getattr_, dir_
