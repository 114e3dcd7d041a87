"""The one router every page module adds its routes to, and page rendering."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import jinja2

from jobkit.web.csrf import csrf_token
from jobkit.web.http import Request, Response, Router, url_part

__all__ = ["page", "router"]

router = Router()
_templates = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(Path(__file__).parent / "templates")),
    autoescape=True, undefined=jinja2.StrictUndefined)


def _when(stamp: Any) -> str:
    """A Unix time as UTC text; whatever else was stored, as it is."""
    if not stamp:
        return "-"
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(stamp)))
    except (TypeError, ValueError, OverflowError, OSError):
        return str(stamp)


_templates.filters["when"] = _when
# Every name put in a URL path or query: {{ root }}/queues/{{ q.raw_name|urlq }}
_templates.filters["urlq"] = url_part


def page(request: Request, template: str, **context: Any) -> Response:
    token, cookie = csrf_token(request)
    html = _templates.get_template(template).render(root=request.root, csrf=token,
                                                     request=request, **context)
    response = Response(html)
    if cookie:
        response.headers.append(("Set-Cookie", cookie))
    return response
