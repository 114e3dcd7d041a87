"""Jinja2 templates for mailers: `<mailer_name>/<action>.txt.j2` and `.html.j2`, in layouts.

Templates live in a `templates/` folder beside each mailer's module (a parent mailer's folder
is searched too, so ApplicationMailer's folder can hold the layouts). HTML templates are
autoescaped; a name used in a template but not set is an error, not a silent blank.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

__all__ = ["render_parts", "template_dirs"]

FORMATS = ("txt", "html")


def template_dirs(mailer_class: type) -> tuple[str, ...]:
    """`templates/` beside the module of the mailer and of each parent mailer, nearest first."""
    found: list[str] = []
    for klass in mailer_class.__mro__:
        module = sys.modules.get(klass.__module__)
        path = getattr(module, "__file__", None)
        if path is None:
            continue
        folder = str(Path(path).parent / "templates")
        if folder not in found and Path(folder).is_dir():
            found.append(folder)
    return tuple(found)


@functools.cache
def _environment(dirs: tuple[str, ...]) -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(list(dirs)),
        autoescape=lambda name: bool(name) and name.endswith(".html.j2"),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )


def render_parts(mailer_class: type, template: str, layout: str | None,
                 context: dict[str, Any]) -> dict[str, str]:
    """{"txt": ..., "html": ...} for whichever formats have a template; {} when none does."""
    dirs = template_dirs(mailer_class)
    env = _environment(dirs)
    parts: dict[str, str] = {}
    for fmt in FORMATS:
        try:
            body = env.get_template(f"{template}.{fmt}.j2").render(context)
        except jinja2.TemplateNotFound as missing:
            if missing.name != f"{template}.{fmt}.j2":
                raise  # an include inside the template is missing: say so
            continue
        if layout:
            try:
                wrapper = env.get_template(f"layouts/{layout}.{fmt}.j2")
            except jinja2.TemplateNotFound:
                wrapper = None
            if wrapper is not None:
                content = Markup(body) if fmt == "html" else body
                body = wrapper.render({**context, "content": content})
        parts[fmt] = body
    return parts
