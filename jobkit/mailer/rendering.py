"""Jinja2 templates for mailers: `<mailer_name>/<action>.txt.j2` and `.html.j2`, in layouts.

A locale's own template, `<action>.<locale>.txt.j2` (`welcome.fr.html.j2`, `welcome.pt_BR...`),
is used before the plain one; Jinja2's i18n extension gives `{% trans %}` and `_()`, whose
catalog the context brings (jobkit.mailer.i18n).

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
        extensions=["jinja2.ext.i18n"],
        autoescape=lambda name: bool(name) and name.endswith(".html.j2"),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )


def _localized(env: jinja2.Environment, template: str, fmt: str,
               locales: list[str]) -> jinja2.Template | None:
    """The first of `<template>.<locale>.<fmt>.j2` (most specific locale first) and
    `<template>.<fmt>.j2` that exists; None when none does."""
    for name in [*(f"{template}.{locale}.{fmt}.j2" for locale in locales),
                 f"{template}.{fmt}.j2"]:
        try:
            return env.get_template(name)
        except jinja2.TemplateNotFound as missing:
            if missing.name != name:
                raise  # an include inside the template is missing: say so
    return None


def render_parts(mailer_class: type, template: str, layout: str | None,
                 context: dict[str, Any], locales: list[str] | None = None) -> dict[str, str]:
    """{"txt": ..., "html": ...} for whichever formats have a template; {} when none does.
    `locales`: the locale's names, most specific first, for per-locale templates."""
    dirs = template_dirs(mailer_class)
    env = _environment(dirs)
    parts: dict[str, str] = {}
    for fmt in FORMATS:
        found = _localized(env, template, fmt, locales or [])
        if found is None:
            continue
        body = found.render(context)
        if layout:
            wrapper = _localized(env, f"layouts/{layout}", fmt, locales or [])
            if wrapper is not None:
                content = Markup(body) if fmt == "html" else body
                body = wrapper.render({**context, "content": content})
        parts[fmt] = body
    return parts
