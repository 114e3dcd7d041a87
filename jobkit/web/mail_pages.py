"""Mail pages: previews (Rails' /rails/mailers) and the development mail catcher's inbox."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage
from typing import Any

from jobkit.mailer.catcher import Inbox
from jobkit.mailer.errors import MailerError
from jobkit.mailer.previews import all_previews, render_preview
from jobkit.web.http import Request, Response, url_part
from jobkit.web.routes import page, router


def _parts(message: EmailMessage) -> dict[str, Any]:
    """What a page shows of a message: headers, text, HTML, attachments."""
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    attachments = [{"filename": part.get_filename() or "(inline)",
                    "type": part.get_content_type(),
                    "size": len(part.get_payload(decode=True) or b""),
                    "content_id": part.get("Content-ID", "")}
                   for part in message.walk()
                   if part.get_content_disposition() in ("attachment", "inline")]
    headers = [(k, v) for k, v in message.items() if k.lower() != "content-type"]
    return {"headers": headers, "text": text.get_content() if text else None,
            "html": html.get_content() if html else None, "attachments": attachments}


@router.route("GET", "/mail/previews")
def previews(request: Request) -> Response:
    return page(request, "previews.html", previews=all_previews())


@router.route("GET", "/mail/previews/<spec:.+>")
def preview(request: Request) -> Response:
    spec = request.params["spec"]
    try:
        message = render_preview(spec)
    except MailerError as exc:
        return Response(str(exc), "404 Not Found", "text/plain")
    if request.query.get("part") == "html":
        return _html_part(message)
    return page(request, "message.html", title=spec, **_parts(message),
                html_url=f"{request.root}/mail/previews/{url_part(spec)}?part=html")


@router.route("GET", "/mail/inbox")
def inbox(request: Request) -> Response:
    messages = []
    for index, caught in enumerate(Inbox().messages()):
        parsed = email.message_from_string(caught["data"], policy=email.policy.default)
        messages.append({"index": index, "subject": parsed["Subject"], "to": parsed["To"],
                         "from": parsed["From"], "received_at": caught["received_at"]})
    return page(request, "inbox.html", messages=messages)


@router.route("GET", "/mail/inbox/<index>")
def inbox_message(request: Request) -> Response:
    caught = Inbox().get(int(request.params["index"])) if request.params["index"].isdigit() \
        else None
    if caught is None:
        return Response("no such message", "404 Not Found", "text/plain")
    message = email.message_from_string(caught["data"], policy=email.policy.default)
    if request.query.get("part") == "html":
        return _html_part(message)
    index = request.params["index"]
    return page(request, "message.html", title=message["Subject"] or "(no subject)",
                **_parts(message),
                html_url=f"{request.root}/mail/inbox/{url_part(index)}?part=html")


def _html_part(message: EmailMessage) -> Response:
    """The HTML body alone, for a sandboxed iframe (no scripts; images by cid do not load)."""
    html = message.get_body(("html",))
    return Response(html.get_content() if html else "", headers=[
        ("Content-Security-Policy", "sandbox; default-src 'none'; style-src 'unsafe-inline'; "
                                    "img-src data:")])
