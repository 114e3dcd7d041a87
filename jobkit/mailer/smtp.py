"""SMTP delivery over reused connections: the `smtp` delivery method.

Why a pool: one connection per mail costs a TCP (and TLS) handshake, EHLO, AUTH and QUIT each
time; a worker process sending many mails keeps its connections open instead. The connections
live on one event loop per process, in a daemon thread ("jobkit-smtp"), because an aiosmtplib
connection belongs to the loop that opened it and `deliver` is called from many threads (and
from code already inside a loop). After a fork the child forgets the parent's connections
without closing them (os.register_at_fork): a socket is never shared across processes.

A connection is checked with NOOP when it has been idle longer than `idle_check_after`, closed
after `max_messages_per_connection` mails, and replaced when the server says 421 or hangs up.
A mail is resent on a fresh connection only when the failure came before DATA (MAIL FROM or
RCPT TO): the server cannot have accepted it. QUIT is sent at process exit and when a Celery
worker process shuts down.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import logging
import os
import ssl
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any, cast
from urllib.parse import unquote, urlsplit

import aiosmtplib

from jobkit.config_values import SMTP_URL_FORMS, smtp_tls, valid_smtp_url
from jobkit.errors import ConfigError
from jobkit.mailer.errors import PermanentDeliveryError, TransientDeliveryError
from jobkit.mailer.headers import wire_bytes
from jobkit.mailer.message import read_addresses
from jobkit.masking import mask_url

__all__ = ["Outgoing", "SmtpSettings", "close_connections", "connections_opened", "outgoing",
           "send_outgoing", "send_smtp"]

DEFAULT_SMTP_URL = "smtp://localhost:25"
DEFAULT_TIMEOUT_SECONDS = 10.0
DEFAULT_POOL_SIZE = 2
DEFAULT_MAX_MESSAGES = 100
DEFAULT_IDLE_CHECK_SECONDS = 5.0
QUIT_TIMEOUT_SECONDS = 2.0

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SmtpSettings:
    """Everything a connection is opened with (the pool's key: changed settings, new pool)."""

    hostname: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False  # implicit TLS (smtps)
    enable_starttls: str = "auto"  # auto | always | never
    verify: bool = True  # openssl_verify_mode: peer
    ca_file: str | None = None
    authentication: str | None = None  # plain | login | cram_md5; None: the best offered
    local_hostname: str | None = None
    open_timeout: float = DEFAULT_TIMEOUT_SECONDS
    read_timeout: float = DEFAULT_TIMEOUT_SECONDS
    pool_size: int = DEFAULT_POOL_SIZE
    max_messages: int = DEFAULT_MAX_MESSAGES
    idle_check_after: float = DEFAULT_IDLE_CHECK_SECONDS

    @classmethod
    def from_url(cls, url: str, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> SmtpSettings:
        return cls.from_mailer({"smtp_url": url, "timeout": timeout}, environ={})

    @classmethod
    def from_mailer(cls, mailer: Mapping[str, Any],
                    environ: Mapping[str, str] | None = None) -> SmtpSettings:
        """From a `mailer:` section. The URL (``SMTP_URL``, else `smtp_url`) gives host, port,
        credentials and, by its scheme, TLS; `tls` and `enable_starttls` given in the section
        win over what the scheme implies."""
        environ = os.environ if environ is None else environ
        url = environ.get("SMTP_URL") or mailer.get("smtp_url", DEFAULT_SMTP_URL)
        if not valid_smtp_url(url):  # the rule settings are loaded with (SMTP_URL may change)
            raise ConfigError(f"smtp_url {mask_url(url)!r}: want {SMTP_URL_FORMS}")
        parts = urlsplit(url)
        tls, starttls = smtp_tls(url, mailer)
        timeout = float(mailer.get("timeout", DEFAULT_TIMEOUT_SECONDS))
        return cls(
            hostname=cast(str, parts.hostname),  # valid_smtp_url checked there is one
            port=parts.port or (465 if tls else 25),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            tls=tls, enable_starttls=starttls,
            verify=mailer.get("openssl_verify_mode", "peer") == "peer",
            ca_file=mailer.get("ca_file"), authentication=mailer.get("authentication"),
            local_hostname=mailer.get("local_hostname"),
            open_timeout=float(mailer.get("open_timeout", timeout)),
            read_timeout=float(mailer.get("read_timeout", timeout)),
            pool_size=int(mailer.get("pool_size", DEFAULT_POOL_SIZE)),
            max_messages=int(mailer.get("max_messages_per_connection", DEFAULT_MAX_MESSAGES)),
            idle_check_after=float(mailer.get("idle_check_after", DEFAULT_IDLE_CHECK_SECONDS)))

    @property
    def where(self) -> str:
        return f"{self.hostname}:{self.port}"

    def tls_context(self) -> ssl.SSLContext:
        return _tls_context(self.verify, self.ca_file)


@functools.lru_cache(maxsize=8)
def _tls_context(verify: bool, ca_file: str | None) -> ssl.SSLContext:
    """One context per (verify, ca_file) and process: loading the system's CAs takes ~30 ms,
    too much to pay per connection. A context is safe to share between connections."""
    context = ssl.create_default_context(cafile=ca_file)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


# -- one connection ----------------------------------------------------------------------------


class _Retry(Exception):
    """The server refused or dropped the mail before DATA: resend it on a new connection."""


@dataclass
class _Connection:
    smtp: aiosmtplib.SMTP
    sent: int = 0
    last_used: float = field(default_factory=time.monotonic)


async def _open(settings: SmtpSettings) -> _Connection:
    smtp = aiosmtplib.SMTP(
        hostname=settings.hostname, port=settings.port, use_tls=settings.tls,
        start_tls={"auto": None, "always": True, "never": False}[settings.enable_starttls],
        local_hostname=settings.local_hostname, timeout=settings.open_timeout,
        tls_context=settings.tls_context() if settings.tls or settings.enable_starttls != "never"
        else None)
    await smtp.connect()
    smtp.timeout = settings.read_timeout
    try:
        if settings.username is not None:
            await _authenticate(smtp, settings)
    except BaseException:
        smtp.close()
        raise
    return _Connection(smtp)


async def _authenticate(smtp: aiosmtplib.SMTP, settings: SmtpSettings) -> None:
    if smtp.is_ehlo_or_helo_needed:  # connect() says EHLO only when it starts TLS
        await smtp.ehlo()
    if not smtp.supports_extension("auth"):
        clear = not settings.tls and smtp.get_transport_info("sslcontext") is None
        raise PermanentDeliveryError(
            f"SMTP {settings.where}: smtp_url has credentials but the server offers no AUTH"
            + (" on a connection in clear (many offer it only after STARTTLS: see "
               "mailer.enable_starttls and mailer.tls)" if clear else ""))
    password = settings.password or ""
    if settings.authentication is None:
        await smtp.login(settings.username or "", password)
    else:
        method = {"plain": smtp.auth_plain, "login": smtp.auth_login,
                  "cram_md5": smtp.auth_crammd5}[settings.authentication]
        await method(settings.username or "", password)


async def _healthy(connection: _Connection, settings: SmtpSettings) -> bool:
    if not connection.smtp.is_connected or connection.sent >= settings.max_messages:
        return False
    if time.monotonic() - connection.last_used < settings.idle_check_after:
        return True
    try:
        await connection.smtp.noop()
    except (aiosmtplib.SMTPException, OSError, TimeoutError):
        return False
    return True


async def _quit(connection: _Connection) -> None:
    try:
        if connection.smtp.is_connected:
            await connection.smtp.quit(timeout=QUIT_TIMEOUT_SECONDS)
    except (aiosmtplib.SMTPException, OSError, TimeoutError):
        pass
    finally:
        connection.smtp.close()


@dataclass(frozen=True)
class Outgoing:
    """A mail as it goes on the wire: the envelope and the bytes (what render-once carries
    in a job's payload, jobkit.mailer.rendered)."""

    sender: str
    recipients: tuple[str, ...]
    data: bytes
    utf8: bool  # an address is not ASCII: needs SMTPUTF8
    message_id: str = ""  # for log lines


def outgoing(message: EmailMessage) -> Outgoing:
    """The envelope (From; To, Cc and Bcc) and wire bytes (no Bcc header) of `message`."""
    sender, recipients, utf8 = read_addresses(message)  # parsed addresses, not the text
    if not sender or not recipients:
        raise PermanentDeliveryError("the message has no sender or no recipients")
    # Bodies are 7-bit: with 8BITMIME or without, the same bytes.
    return Outgoing(sender, tuple(recipients), wire_bytes(message, utf8=utf8), utf8,
                    str(message.get("Message-ID", "")))


async def _transaction(connection: _Connection, mail: Outgoing
                       ) -> dict[str, aiosmtplib.SMTPResponse]:
    """MAIL, RCPT, DATA on `connection`; the refused recipients when some were accepted.
    Raises _Retry when the server hung up or said 421 before DATA."""
    smtp = connection.smtp
    sender, recipients, utf8, data = mail.sender, mail.recipients, mail.utf8, mail.data
    options = ["SMTPUTF8"] if utf8 else []
    if smtp.supports_extension("8BITMIME"):
        options.append("BODY=8BITMIME")
    if utf8 and not smtp.supports_extension("smtputf8"):
        raise PermanentDeliveryError(f"an address is not ASCII ({sender}, {recipients}) and "
                                     "the server does not offer SMTPUTF8")
    if smtp.supports_extension("size"):
        options.insert(0, f"SIZE={len(data)}")
    encoding = "utf-8" if utf8 else "ascii"
    try:
        await smtp.mail(sender, options=options, encoding=encoding)
        refused: dict[str, aiosmtplib.SMTPResponse] = {}
        for recipient in recipients:
            try:
                await smtp.rcpt(recipient, encoding=encoding)
            except aiosmtplib.SMTPRecipientRefused as exc:
                if exc.code == 421:
                    raise
                refused[recipient] = aiosmtplib.SMTPResponse(exc.code, exc.message)
    except aiosmtplib.SMTPServerDisconnected as exc:
        raise _Retry(str(exc)) from exc
    except aiosmtplib.SMTPResponseException as exc:
        if exc.code == 421:
            raise _Retry(f"{exc.code} {exc.message}") from exc
        await _reset(smtp)
        raise
    if len(refused) == len(recipients):
        await _reset(smtp)
        raise aiosmtplib.SMTPRecipientsRefused(
            [aiosmtplib.SMTPRecipientRefused(r.code, r.message, a) for a, r in refused.items()])
    try:
        await smtp.data(data)  # from here a failure is ambiguous: never resent in place
    except aiosmtplib.SMTPResponseException:
        # Refused (DATA itself, or the end of data): end the transaction, or the server takes
        # the next mail's MAIL FROM for a nested one (postfix: 503 5.5.1).
        await _reset(smtp)
        raise
    connection.sent += 1
    connection.last_used = time.monotonic()
    return refused


async def _reset(smtp: aiosmtplib.SMTP) -> None:
    try:
        await smtp.rset()
    except (aiosmtplib.SMTPException, OSError, TimeoutError):
        smtp.close()


# -- the pool (on the loop thread) -------------------------------------------------------------


class _Pool:
    """Idle connections to one server; at most `pool_size` open at once."""

    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings
        self.idle: list[_Connection] = []
        self.slots = asyncio.Semaphore(settings.pool_size)
        self.opened = 0  # connections opened so far (for tests and the benchmark)

    async def send(self, mail: Outgoing) -> dict[str, aiosmtplib.SMTPResponse]:
        async with self.slots:
            for attempt in range(2):
                connection = await self._checkout()
                try:
                    refused = await _transaction(connection, mail)
                except _Retry as exc:
                    connection.smtp.close()
                    if attempt == 1:
                        raise TransientDeliveryError(
                            f"SMTP {self.settings.where}: {exc}") from exc
                    continue
                except (aiosmtplib.SMTPResponseException, aiosmtplib.SMTPRecipientsRefused):
                    # A reply about this mail (refused, 4xx/5xx): the session is still good.
                    if connection.smtp.is_connected:
                        self._checkin(connection)
                    raise
                except BaseException:
                    connection.smtp.close()
                    raise
                self._checkin(connection)
                return refused
        raise AssertionError("unreachable")

    async def _checkout(self) -> _Connection:
        while self.idle:
            connection = self.idle.pop()
            if await _healthy(connection, self.settings):
                return connection
            await _quit(connection)
        self.opened += 1
        return await _open(self.settings)

    def _checkin(self, connection: _Connection) -> None:
        if connection.sent >= self.settings.max_messages:
            asyncio.get_running_loop().create_task(_quit(connection))
        else:
            self.idle.append(connection)

    async def close(self) -> None:
        idle, self.idle = self.idle, []
        await asyncio.gather(*(_quit(c) for c in idle))


@dataclass
class _Loop:
    """This process's SMTP event loop thread and its pools."""

    loop: asyncio.AbstractEventLoop
    thread: threading.Thread
    pools: dict[SmtpSettings, _Pool] = field(default_factory=dict)


_state: _Loop | None = None
_state_lock = threading.Lock()


def _current() -> _Loop:
    global _state
    with _state_lock:
        if _state is None:
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="jobkit-smtp", daemon=True)
            thread.start()
            _state = _Loop(loop, thread)
        return _state


def _forget_after_fork() -> None:
    """In a forked child: drop the parent's loop and connections unclosed (a QUIT from here
    would end the parent's session)."""
    global _state, _state_lock
    _state, _state_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)


def _pool(state: _Loop, settings: SmtpSettings) -> _Pool:
    pool = state.pools.get(settings)
    if pool is None:  # on the loop thread: asyncio.Semaphore binds to the running loop
        pool = state.pools[settings] = _Pool(settings)
    return pool


def connections_opened(settings: SmtpSettings) -> int:
    """How many connections this process opened to `settings`' server so far."""
    state = _state
    pool = state.pools.get(settings) if state is not None else None
    return pool.opened if pool is not None else 0


def close_connections() -> None:
    """QUIT every idle connection of this process (at exit, at worker shutdown, in tests)."""
    state = _state
    if state is None or not state.thread.is_alive():
        return

    async def close_all() -> None:
        await asyncio.gather(*(pool.close() for pool in list(state.pools.values())))
        state.pools.clear()

    try:
        asyncio.run_coroutine_threadsafe(close_all(), state.loop).result(
            QUIT_TIMEOUT_SECONDS * 2)
    except Exception:  # at exit: nothing left to tell
        logger.debug("closing SMTP connections failed", exc_info=True)


atexit.register(close_connections)


# -- sending -----------------------------------------------------------------------------------


def _certificate_error(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLCertVerificationError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    if "CERTIFICATE_VERIFY_FAILED" in str(exc):
        return ssl.SSLCertVerificationError(str(exc))
    return None


def send_smtp(message: EmailMessage, settings: SmtpSettings) -> None:
    """Send `message` over one of this process's connections to `settings`' server."""
    send_outgoing(outgoing(message), settings)


def send_outgoing(mail: Outgoing, settings: SmtpSettings) -> None:
    """Send `mail` over one of this process's connections to `settings`' server.
    PermanentDeliveryError for what a retry cannot fix (5xx, certificate verification),
    TransientDeliveryError for the rest (connection, timeout, 4xx)."""
    state = _current()

    async def send() -> dict[str, aiosmtplib.SMTPResponse]:
        return await _pool(state, settings).send(mail)

    future = asyncio.run_coroutine_threadsafe(send(), state.loop)
    try:
        try:
            refused = future.result()
        except BaseException:
            future.cancel()  # e.g. a soft time limit raised here: stop the send too
            raise
    except aiosmtplib.SMTPRecipientsRefused as exc:
        codes = [r.code for r in exc.recipients]
        error = PermanentDeliveryError if all(500 <= c < 600 for c in codes) else \
            TransientDeliveryError
        replies = "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in exc.recipients)
        raise error(f"SMTP refused recipients: {replies}") from exc
    except aiosmtplib.SMTPResponseException as exc:
        error = PermanentDeliveryError if 500 <= exc.code < 600 else TransientDeliveryError
        raise error(f"SMTP {exc.code} {exc.message}") from exc
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        if (cert := _certificate_error(exc)) is not None:
            raise PermanentDeliveryError(
                f"SMTP {settings.where}: the server's TLS certificate failed verification "
                f"({cert}); set mailer.ca_file to the CA that signed it, or "
                "mailer.openssl_verify_mode: none to skip verification (or "
                "mailer.enable_starttls: never to send in clear)") from exc
        raise TransientDeliveryError(f"SMTP {settings.where}: {exc}") from exc
    except ValueError as exc:  # aiosmtplib's own check of a mailbox (addresses.py checks first)
        raise PermanentDeliveryError(f"SMTP {settings.where}: {exc}") from exc
    if refused:  # the others got it: raising would resend to them, so say it loudly instead
        logger.warning("SMTP accepted %s but refused %s", mail.message_id,
                       "; ".join(f"{rcpt}: {reply}" for rcpt, reply in refused.items()))


def _connect_worker_shutdown() -> None:
    """QUIT when a Celery worker process (a prefork child or the main process) shuts down:
    a prefork child leaves by os._exit, which skips atexit."""
    from celery import signals

    signals.worker_process_shutdown.connect(lambda **_: close_connections(), weak=False)
    signals.worker_shutdown.connect(lambda **_: close_connections(), weak=False)


_connect_worker_shutdown()
