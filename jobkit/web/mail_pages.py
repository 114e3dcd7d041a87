"""Mail pages: previews (Rails' /rails/mailers) and the development mail catcher's inbox."""

from __future__ import annotations

from email.message import EmailMessage, MIMEPart
from typing import Any
from urllib.parse import urlencode

from jobkit.mailer.catcher import Inbox
from jobkit.mailer.errors import MailerError
from jobkit.mailer.previews import all_previews, inline_images, render_preview
from jobkit.web.http import Request, Response, url_part
from jobkit.web.routes import page, router


def _content(part: MIMEPart | None, notes: list[str]) -> str | None:
    """A text part's content; one in a charset Python does not know is shown as UTF-8 with
    replacement characters, and `notes` says so (instead of a 500)."""
    if part is None:
        return None
    try:
        return part.get_content()
    except (LookupError, UnicodeError):
        charset = part.get_content_charset()
        notes.append(f"The {part.get_content_type()} part's charset {charset!r} is unknown: "
                     "shown as UTF-8, with \ufffd for what does not decode.")
        payload = part.get_payload(decode=True)
        return payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""


def _parts(message: EmailMessage) -> dict[str, Any]:
    """What a page shows of a message: headers, text, HTML, attachments, notes."""
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    notes: list[str] = []
    attachments = [{"filename": part.get_filename() or "(inline)",
                    "type": part.get_content_type(),
                    "size": len(part.get_payload(decode=True) or b""),
                    "content_id": part.get("Content-ID", "")}
                   for part in message.walk()
                   if part.get_content_disposition() in ("attachment", "inline")]
    headers = [(k, v) for k, v in message.items() if k.lower() != "content-type"]
    return {"headers": headers, "text": _content(text, notes), "html": _content(html, notes),
            "attachments": attachments, "notes": notes}


@router.route("GET", "/mail/previews")
def previews(request: Request) -> Response:
    return page(request, "previews.html", previews=all_previews())


@router.route("GET", "/mail/previews/<spec:.+>")
def preview(request: Request) -> Response:
    spec = request.params["spec"]
    params = {k: v for k, v in request.query.items() if k != "part"}  # the preview's params
    try:
        message = render_preview(spec, params)
    except MailerError as exc:
        return Response(str(exc), "404 Not Found", "text/plain")
    if request.query.get("part") == "html":
        return _html_part(message)
    return page(request, "message.html", title=spec, **_parts(message),
                html_url=f"{request.root}/mail/previews/{url_part(spec)}?"
                         f"{urlencode({**params, 'part': 'html'})}")


@router.route("GET", "/mail/inbox")
def inbox(request: Request) -> Response:
    messages = []
    for index, caught in enumerate(Inbox().messages()):
        parsed = caught.message()
        messages.append({"index": index, "subject": parsed["Subject"], "to": parsed["To"],
                         "from": parsed["From"], "received_at": caught["received_at"],
                         "rcpt_tos": ", ".join(caught["rcpt_tos"])})
    return page(request, "inbox.html", messages=messages)


@router.route("GET", "/mail/inbox/<index>")
def inbox_message(request: Request) -> Response:
    caught = Inbox().get(int(request.params["index"])) if request.params["index"].isdigit() \
        else None
    if caught is None:
        return Response("no such message", "404 Not Found", "text/plain")
    message = caught.message()
    if request.query.get("part") == "html":
        return _html_part(message)
    index = request.params["index"]
    envelope = [("MAIL FROM", caught["mail_from"]), ("RCPT TO", ", ".join(caught["rcpt_tos"]))]
    return page(request, "message.html", title=message["Subject"] or "(no subject)",
                **_parts(message), envelope=envelope,
                html_url=f"{request.root}/mail/inbox/{url_part(index)}?part=html")


def _html_part(message: EmailMessage) -> Response:
    """The HTML body alone, for a sandboxed iframe (no scripts); its inline (cid:) images
    as data: URLs, the only images it may load."""
    html = inline_images(message, _content(message.get_body(("html",)), []) or "")
    return Response(html, headers=[
        ("Content-Security-Policy", "sandbox; default-src 'none'; style-src 'unsafe-inline'; "
                                    "img-src data:")])
