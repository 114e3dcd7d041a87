"""The `sendmail` delivery method: hand the mail to the local MTA's sendmail program.

As Action Mailer (the mail gem) runs it: ``<sendmail_location> <sendmail_arguments> -f
<sender> -- <recipients...>`` with the message (Bcc left out) on stdin. `-f` sets the
envelope sender and `--` ends the options, so no address is read as one. The exit status
(sysexits.h) says whether a retry can help.
"""

from __future__ import annotations

import subprocess
from email.message import EmailMessage
from typing import Any

from jobkit.mailer.errors import PermanentDeliveryError, TransientDeliveryError
from jobkit.mailer.headers import wire_bytes
from jobkit.mailer.message import read_addresses

__all__ = ["DEFAULT_ARGUMENTS", "DEFAULT_LOCATION", "deliver_sendmail"]

DEFAULT_LOCATION = "/usr/sbin/sendmail"
DEFAULT_ARGUMENTS = ("-i",)  # a line with a lone "." does not end the message
DEFAULT_TIMEOUT_SECONDS = 10.0
# sysexits.h: EX_UNAVAILABLE, EX_OSERR, EX_IOERR, EX_TEMPFAIL: the MTA may take it later.
TRANSIENT_EXITS = {69: "EX_UNAVAILABLE", 71: "EX_OSERR", 74: "EX_IOERR", 75: "EX_TEMPFAIL"}


def command(settings: dict[str, Any], sender: str, recipients: list[str]) -> list[str]:
    arguments = settings.get("sendmail_arguments", DEFAULT_ARGUMENTS)  # a list: config splits
    return [settings.get("sendmail_location", DEFAULT_LOCATION), *arguments,
            "-f", sender, "--", *recipients]


def deliver_sendmail(message: EmailMessage, settings: dict[str, Any]) -> None:
    sender, recipients, utf8 = read_addresses(message)
    if not sender or not recipients:
        raise PermanentDeliveryError("the message has no sender or no recipients")
    argv = command(settings, sender, recipients)
    timeout = float(settings.get("timeout", DEFAULT_TIMEOUT_SECONDS))
    data = wire_bytes(message, utf8=utf8)
    try:
        done = subprocess.run(argv, input=data, capture_output=True, timeout=timeout,
                              check=False)
    except FileNotFoundError as exc:  # retrying will not install it: the dead set says why
        raise PermanentDeliveryError(f"mailer.sendmail_location {argv[0]!r}: no such program "
                                     "(install an MTA such as postfix, or set the path)") from exc
    except PermissionError as exc:
        raise PermanentDeliveryError(f"mailer.sendmail_location {argv[0]!r}: not "
                                     "executable") from exc
    except subprocess.TimeoutExpired as exc:  # it may have queued the mail: a retry can resend
        raise TransientDeliveryError(f"{argv[0]} did not finish in {timeout:g}s") from exc
    if done.returncode == 0:
        return
    said = done.stderr.decode(errors="replace").strip()[-500:] or "(nothing on stderr)"
    if done.returncode < 0 or done.returncode in TRANSIENT_EXITS:
        name = TRANSIENT_EXITS.get(done.returncode, f"signal {-done.returncode}")
        raise TransientDeliveryError(f"{argv[0]} exited {done.returncode} ({name}): {said}")
    raise PermanentDeliveryError(f"{argv[0]} exited {done.returncode}: {said}")
