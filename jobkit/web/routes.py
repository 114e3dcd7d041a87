"""The one router every page module adds its routes to, and page rendering."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2

from jobkit.display import shown_job, when
from jobkit.web import i18n
from jobkit.web.csrf import csrf_token
from jobkit.web.http import Request, Response, Router, url_part

__all__ = ["page", "router"]

router = Router()
_templates = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(Path(__file__).parent / "templates")),
    autoescape=True, undefined=jinja2.StrictUndefined)


i18n.install(_templates)
_templates.filters["when"] = when
_templates.filters["shown_job"] = shown_job  # {% set shown = job.payload|shown_job %}
# Every name put in a URL path or query: {{ root }}/queues/{{ q.raw_name|urlq }}
_templates.filters["urlq"] = url_part


def page(request: Request, template: str, **context: Any) -> Response:
    token, cookie = csrf_token(request)
    language, language_cookie = i18n.choose(request)
    i18n.use(language)
    html = _templates.get_template(template).render(
        root=request.root, csrf=token, request=request, lang=language,
        languages=i18n.LANGUAGES, language_links=i18n.links(request), **context)
    response = Response(html)
    for value in (cookie, language_cookie):
        if value:
            response.headers.append(("Set-Cookie", value))
    return response
