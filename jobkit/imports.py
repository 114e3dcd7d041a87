"""Import objects by dotted path, as workers find job and mailer classes on the wire."""

from __future__ import annotations

import importlib
from typing import Any

from jobkit.errors import JobClassError

__all__ = ["class_path", "import_fresh", "import_object", "require_importable"]


def class_path(cls: type) -> str:
    """The import path that names a class on the wire (the inverse of `import_object`)."""
    return f"{cls.__module__}.{cls.__qualname__}"


def import_fresh(module_name: str) -> Any:
    """Import a module; on ImportError look at the disk again once (code deployed since)."""
    try:
        return importlib.import_module(module_name)
    except ImportError:
        importlib.invalidate_caches()
        return importlib.import_module(module_name)


def import_object(path: str, what: str) -> Any:
    """``pkg.module.Outer.Inner`` -> the object: the longest importable module prefix, then
    attributes."""
    parts = path.split(".")
    if len(parts) < 2 or not all(parts):
        raise JobClassError(f"{path!r} is not an import path (module.ClassName)")
    error: Exception | None = None
    for split in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:split])
        try:
            obj = import_fresh(module_name)
        except ModuleNotFoundError as exc:
            if exc.name is None or not module_name.startswith(exc.name):
                error = exc  # the module exists but an import inside it failed
                break
            error = error or exc
            continue
        except Exception as exc:
            error = exc
            break
        try:
            for attr in parts[split:]:
                obj = getattr(obj, attr)
        except AttributeError:
            raise JobClassError(f"{path}: module {module_name} has no {'.'.join(parts[split:])}"
                                ) from None
        return obj
    raise JobClassError(f"cannot import {what} {path}: {type(error).__name__}: {error}"
                        ) from error


def require_importable(obj: Any, what: str) -> None:
    """JobClassError when a worker could never import `obj` by its path (defined in
    `__main__` or inside a function); workers find job, mailer and enum classes that way."""
    if obj.__module__ == "__main__" or "<locals>" in obj.__qualname__:
        raise JobClassError(f"{what} {class_path(obj)} cannot be imported by "
                            "a worker: define it at the top level of an importable module")
