"""Mail in the reader's language: gettext catalogs, per-locale templates, default subjects.

    with with_locale(user.locale):               # Rails' I18n.with_locale
        UserMailer.welcome(user).deliver_later()  # the job renders in that locale too

Catalogs are GNU gettext `.mo` files in `<locale_dir>/<locale>/LC_MESSAGES/messages.mo` (the
layout `pybabel compile` and `msgfmt` write), read with the standard library's gettext and
cached per process. Templates get `gettext`, `ngettext`, `pgettext`, `_()` and Jinja2's
`{% trans %}` blocks; `welcome.fr.html.j2` is used before `welcome.html.j2` in `fr`.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import gettext as stdlib_gettext
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from jobkit.config import current_settings
from jobkit.config_values import LOCALE_FORM

__all__ = ["current_locale", "default_subject", "gettext", "ngettext", "translations",
           "with_locale"]

DOMAIN = "messages"
DEFAULT_LOCALE = "en"
DEFAULT_LOCALE_DIR = "locales"

_locale: contextvars.ContextVar[str | None] = contextvars.ContextVar("jobkit_mail_locale",
                                                                    default=None)


def _checked(locale: str) -> str:
    if not (isinstance(locale, str) and LOCALE_FORM.fullmatch(locale)):
        raise ValueError(f"locale {locale!r}: want a language tag like en, fr or pt_BR")
    return locale.replace("-", "_")


def chosen_locale() -> str | None:
    """The locale a `with_locale` block set, or None (then the default applies)."""
    return _locale.get()


def current_locale() -> str:
    """The `with_locale` locale, else `mailer.default_locale` (default "en")."""
    return _locale.get() or str(current_settings().mailer.get("default_locale", DEFAULT_LOCALE))


@contextlib.contextmanager
def with_locale(locale: str) -> Iterator[str]:
    """Build (and, for deliver_later, enqueue) mail in `locale` inside the block."""
    token = _locale.set(_checked(locale))
    try:
        yield _locale.get() or locale
    finally:
        _locale.reset(token)


def fallbacks(locale: str) -> list[str]:
    """pt_BR -> ["pt_BR", "pt"]: the most specific first."""
    parts = _checked(locale).split("_")
    return ["_".join(parts[:n]) for n in range(len(parts), 0, -1)]


@functools.cache
def _translations(locale_dir: str, locale: str) -> stdlib_gettext.NullTranslations:
    return stdlib_gettext.translation(DOMAIN, locale_dir, languages=fallbacks(locale),
                                      fallback=True)


def translations(locale: str | None = None) -> stdlib_gettext.NullTranslations:
    """The catalog for `locale` (default: the current one); a missing one translates
    nothing."""
    folder = current_settings().mailer.get("locale_dir", DEFAULT_LOCALE_DIR)
    return _translations(str(Path(folder).resolve()), locale or current_locale())


def gettext(message: str) -> str:
    """`message` in the current locale (for subjects and text built in an action)."""
    return translations().gettext(message)


def ngettext(singular: str, plural: str, n: int) -> str:
    return translations().ngettext(singular, plural, n)


def template_callables() -> dict[str, Any]:
    """What Jinja2's i18n extension calls, for the current locale."""
    catalog = translations()
    return {"gettext": catalog.gettext, "ngettext": catalog.ngettext,
            "pgettext": catalog.pgettext, "npgettext": catalog.npgettext}


def default_subject(mailer_name: str, action: str, values: dict[str, Any]) -> str:
    """Action Mailer's default_i18n_subject: the catalog's `<mailer>.<action>.subject`
    (formatted with `values`), else the action's name made readable."""
    key = f"{mailer_name}.{action}.subject"
    text = gettext(key)
    if text == key:
        return action.replace("_", " ").capitalize()
    return text.format(**values) if values else text
