"""jobkit mail speed: deliver_later end to end, and render + send against raw aiosmtplib.

Run from the repository root: ``.venv/bin/python bench/mail.py [--n 500] [--repeat 3] [--quick]``.

The SMTP server is aiosmtpd (``Controller`` on a free 127.0.0.1 port, never 6379, with
``server_hostname`` set so it does no DNS per connection) whose handler only counts accepted
messages and connections. It runs in a **subprocess** (this script with ``--serve``, in its
own session) so that it never competes for the GIL of the code being measured; it is stopped
by closing its stdin, then by its PID. After every measurement the server's count must have
grown by exactly the messages sent, or the benchmark fails.

**deliver_later** (a private redis-server; ``jobkit worker -c 2 -q mailers`` on it): N
``deliver_later`` calls in this process with no worker running (the caller's rate), then a
worker is started and timed from its ``--warmup``-th delivered mail (started, connections
open) to the N-th (the worker's rate: mails/s delivered):

* *now*: ``BenchMailer.welcome_user(...).deliver_later()``: the mail is rendered in the caller
  and its wire bytes and envelope travel in the job (jobkit.mailer.rendered); each worker
  process sends them unparsed over connections it keeps open (jobkit.mailer.smtp).
* *before* (the path of jobkit before render-once and reuse, reproduced): the caller renders
  (``.message``, as deliver_later did to refuse bad input) and enqueues ``MailDeliveryJob``
  with the mailer, action and arguments only, so the worker renders again, and the worker
  runs with ``max_messages_per_connection: 1`` (a connection, EHLO and QUIT per mail).

**render + send, in one process, one message at a time** (after ``--warmup`` untimed calls):

* jobkit: ``UserMailer.welcome(user).deliver_now()`` (two Jinja2 templates and two layouts,
  address checks, multipart/alternative with the inline logo PNG), sent over the process's
  reused connection (``pool_size: 1``, default ``max_messages_per_connection`` 100).
* raw: the same message built by hand with ``email.message.EmailMessage`` and sent with
  ``SMTP.send_message`` over one aiosmtplib connection opened once (one event loop kept).
* render only / build only: the same without sending, to separate the build from SMTP.

Each measurement is repeated ``--repeat`` times, the order of the sides alternating; the
tables give the median and min-max of the rates, ratios are of medians. CPU time per message
(``time.process_time``) of this process is also given for the in-process rows. The exit status
is 0 unless the benchmark itself fails (this is a report, not a test).
"""

from __future__ import annotations

import argparse
import asyncio
import html
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (
    BIN,
    ROOT,
    free_port,
    private_redis,
    run_main,
    start_worker,
    stop_process,
    tail,
)

SERVER_HOSTNAME = "bench-smtp.local"  # aiosmtpd would call socket.getfqdn() per connection
SERVER_START_TIMEOUT = 15.0
SMTP_TIMEOUT = 10.0  # jobkit's default `mailer.timeout`
USER = SimpleNamespace(id=42, name="Ada Lovelace", email="ada@example.com")


# -- the SMTP server (subprocess) -------------------------------------------------------------


class CountingHandler:
    """Accepts every message and only counts it (and the connections it came on)."""

    def __init__(self) -> None:
        self.count = 0
        self.connections = 0  # EHLOs: one per connection (no STARTTLS here)

    async def handle_EHLO(self, server: Any, session: Any, envelope: Any, hostname: str,  # noqa: N802
                          responses: list[str]) -> list[str]:
        session.host_name = hostname
        self.connections += 1
        return responses

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.count += 1
        return "250 OK"


def serve() -> int:
    """`--serve`: start the counting server, print "ready PORT", then answer "count" lines on
    stdin with the number of messages accepted so far; stop at EOF."""
    from aiosmtpd.controller import Controller

    handler = CountingHandler()
    for attempt in range(5):
        controller = Controller(handler, hostname="127.0.0.1", port=free_port(),
                                server_hostname=SERVER_HOSTNAME)
        try:
            controller.start()
            break
        except Exception:
            if attempt == 4:
                raise
    print(f"ready {controller.port}", flush=True)
    try:
        for line in sys.stdin:
            if line.strip() == "count":
                print(handler.count, flush=True)
            elif line.strip() == "connections":
                print(handler.connections, flush=True)
    finally:
        controller.stop()
    return 0


@dataclass
class SmtpServer:
    """The parent's handle on the `--serve` subprocess."""

    proc: subprocess.Popen
    port: int
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def count(self, what: str = "count") -> int:
        """Messages accepted so far (`what` "connections": connections opened so far)."""
        with self.lock:
            assert self.proc.stdin is not None and self.proc.stdout is not None
            self.proc.stdin.write(f"{what}\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        if not line.strip():
            raise RuntimeError(f"SMTP server (PID {self.proc.pid}) exited: {self.proc.poll()}")
        return int(line)

    def stop(self) -> None:
        try:
            if self.proc.stdin is not None:
                with suppress(OSError, ValueError, RuntimeError):
                    self.proc.stdin.close()  # EOF: the server stops its controller and exits
                with suppress(subprocess.TimeoutExpired):
                    self.proc.wait(5.0)
        finally:
            stop_process(self.proc, grace=5.0)  # by PID, then its process group, if still there


def start_smtp_server(workdir: Path) -> SmtpServer:
    with (workdir / "smtp-server.log").open("w") as log:
        proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--serve"],
                                cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=log, text=True, start_new_session=True)
    try:
        port = _read_ready(proc, workdir / "smtp-server.log")
    except BaseException:
        stop_process(proc, grace=2.0)
        raise
    return SmtpServer(proc, port)


def _read_ready(proc: subprocess.Popen, log: Path) -> int:
    assert proc.stdout is not None
    result: list[str] = []
    reader = threading.Thread(target=lambda: result.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(SERVER_START_TIMEOUT)
    line = result[0] if result else ""
    if not line.startswith("ready "):
        raise RuntimeError(f"SMTP server did not start (exit {proc.poll()}):\n"
                           f"{log.read_text(errors='replace')[-2000:]}")
    return int(line.split()[1])


# -- the two sides ----------------------------------------------------------------------------


def configure_jobkit(server: SmtpServer, redis_url: str) -> type:
    """Point jobkit at `redis_url` and its mailer at `server`; returns UserMailer."""
    os.environ.pop("SMTP_URL", None)  # it would win over smtp_url
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import jobkit
    from jobkit.adapters import use_adapter
    from mailers.user_mailer import UserMailer

    jobkit.configure(redis_url=redis_url,
                     mailer={"delivery_method": "smtp", "smtp_url": server.url,
                             "timeout": SMTP_TIMEOUT, "pool_size": 1})
    use_adapter("celery")
    return UserMailer


def jobkit_render(mailer: type) -> Callable[[], object]:
    return lambda: mailer.welcome(USER).message


def jobkit_deliver(mailer: type) -> Callable[[], object]:
    return lambda: mailer.welcome(USER).deliver_now()


def _raw_bodies(user: Any) -> tuple[str, str, str]:
    """(text, html, logo cid) as the welcome templates and layouts render them."""
    from mailers.user_mailer import app_url

    login_url = f"{app_url()}/login"
    cid = make_msgid(domain="jobkit")
    text = (f"Welcome, {user.name}!\n\nYour account for {user.email} is ready.\n"
            f"Log in: {login_url}\n\n--\n"
            "Example Inc. You get this mail because you have an account.\n")
    name, email, url = (html.escape(str(v)) for v in (user.name, user.email, login_url))
    content = (f'<p><img src="cid:{cid.strip("<>")}" alt="Example" width="32" height="32"></p>\n'
               f"<h1>Welcome, {name}!</h1>\n<p>Your account for {email} is ready.</p>\n"
               f'<p><a href="{url}">Log in</a></p>\n')
    page = ('<!DOCTYPE html>\n<html>\n  <head><meta charset="utf-8"></head>\n'
            '  <body style="font-family: sans-serif; line-height: 1.5; color: #222">\n'
            f"    {content}\n    <hr>\n"
            '    <p style="color: #888; font-size: small">Example Inc. · You get this mail '
            "because you have an account.</p>\n  </body>\n</html>\n")
    return text, page, cid


def raw_message(user: Any = USER) -> EmailMessage:
    """The welcome mail built by hand: text + (HTML + inline logo)."""
    from mailers.application_mailer import ApplicationMailer
    from mailers.user_mailer import LOGO_PNG

    text, page, cid = _raw_bodies(user)
    message = EmailMessage()
    message["From"] = ApplicationMailer.default["from"]
    message["To"] = user.email
    message["Subject"] = "Welcome to Example"
    message["Date"] = formatdate(localtime=False, usegmt=True)
    message["Message-ID"] = make_msgid(domain="jobkit")
    message.set_content(text)
    message.add_alternative(page, subtype="html")
    message.get_payload()[-1].add_related(LOGO_PNG, "image", "png", cid=cid,
                                          filename="logo.png", disposition="inline")
    return message


class RawSender:
    """Raw aiosmtplib over one connection opened once, on one event loop kept open."""

    def __init__(self, server: SmtpServer) -> None:
        import aiosmtplib

        self.loop = asyncio.new_event_loop()
        self.smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=server.port,
                                    start_tls=False, timeout=SMTP_TIMEOUT)
        self.loop.run_until_complete(self.smtp.connect())

    def send(self) -> object:
        return self.loop.run_until_complete(self.smtp.send_message(raw_message()))

    def close(self) -> None:
        self.loop.run_until_complete(self.smtp.quit())
        self.loop.close()


def _shape(message: EmailMessage) -> tuple[list[str], list[str]]:
    """(MIME tree, text bodies with the logo's cid blanked) for comparing the two sides."""
    tree = [part.get_content_type() for part in message.walk()]
    cids = [p["Content-ID"].strip("<>") for p in message.walk() if p["Content-ID"]]
    bodies = []
    for part in message.walk():
        if part.get_content_maintype() == "text":
            body = part.get_content()
            for cid in cids:
                body = body.replace(cid, "CID")
            bodies.append(body)
    return tree, bodies


def check_equivalent(mailer: type) -> str:
    """Fail unless both sides build the same mail; a one-line description of it."""
    ours, theirs = mailer.welcome(USER).message, raw_message()
    if _shape(ours) != _shape(theirs):
        raise RuntimeError(f"raw message differs from jobkit's:\n{_shape(ours)}\n"
                           f"{_shape(theirs)}")
    headers = [h for h in ("From", "To", "Subject", "Date", "Message-ID") if h in theirs]
    if headers != [h for h in ("From", "To", "Subject", "Date", "Message-ID") if h in ours]:
        raise RuntimeError("raw message headers differ from jobkit's")
    tree = " > ".join(dict.fromkeys(_shape(ours)[0]))
    return (f"same MIME parts ({tree}), bodies and headers; {len(ours.as_bytes()):,} bytes "
            f"(jobkit) vs {len(theirs.as_bytes()):,} bytes (raw)")


# -- timing -----------------------------------------------------------------------------------


@dataclass
class Timing:
    rate: float  # messages per second, wall clock
    cpu_ms: float  # CPU time of this process per message (the SMTP server's is not counted)


def timed(n: int, warmup: int, call: Callable[[], object]) -> Timing:
    """`n` sequential calls after `warmup` untimed ones: wall rate and CPU ms per call."""
    for _ in range(warmup):
        call()
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(n):
        call()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return Timing(n / wall, cpu * 1000 / n)


def timed_sends(server: SmtpServer, n: int, warmup: int, call: Callable[[], object],
                what: str) -> Timing:
    """`timed`, checking that the server accepted exactly every message sent."""
    before = server.count()
    timing = timed(n, warmup, call)
    accepted = server.count() - before
    if accepted != n + warmup:
        raise RuntimeError(f"{what}: server accepted {accepted} messages, sent {n + warmup}")
    return timing


@dataclass
class Samples:
    jobkit_deliver: list[Timing] = field(default_factory=list)
    raw_send: list[Timing] = field(default_factory=list)
    jobkit_render: list[Timing] = field(default_factory=list)
    raw_build: list[Timing] = field(default_factory=list)


def run_once(server: SmtpServer, mailer: type, n: int, warmup: int, samples: Samples,
             jobkit_first: bool) -> None:
    def jobkit_side() -> None:
        samples.jobkit_render.append(timed(n, warmup, jobkit_render(mailer)))
        samples.jobkit_deliver.append(
            timed_sends(server, n, warmup, jobkit_deliver(mailer), "jobkit deliver_now"))

    def raw_side() -> None:
        samples.raw_build.append(timed(n, warmup, raw_message))
        sender = RawSender(server)
        try:
            samples.raw_send.append(timed_sends(server, n, warmup, sender.send,
                                                "raw aiosmtplib over one connection"))
        finally:
            sender.close()

    for side in (jobkit_side, raw_side) if jobkit_first else (raw_side, jobkit_side):
        side()


# -- deliver_later, end to end --------------------------------------------------------------

WORKER_ARGV = [str(BIN / "jobkit"), "worker", "-q", "mailers", "-c", "2", "-l", "WARNING"]
DRAIN_POLL_SECONDS = 0.005
NAME, EMAIL = "Ada Lovelace", "ada@example.com"


@dataclass
class LaterSamples:
    """Per mode ("now", "before"): deliver_later calls/s in this process, mails/s the worker
    delivers, connections the worker opened."""

    enqueue: dict[str, list[float]] = field(default_factory=dict)
    drain: dict[str, list[float]] = field(default_factory=dict)
    connections: dict[str, list[int]] = field(default_factory=dict)


def enqueue_now(i: int) -> None:
    from bench.mail_jobs import BenchMailer

    BenchMailer.welcome_user(i, NAME, EMAIL).deliver_later()


def enqueue_before(i: int) -> None:
    """jobkit's deliver_later before render-once: render to check, enqueue the arguments."""
    from bench.mail_jobs import BenchMailer
    from jobkit.imports import class_path
    from jobkit.mailer import MailDeliveryJob

    if BenchMailer.welcome_user(i, NAME, EMAIL).message is not None:
        MailDeliveryJob.perform_later(class_path(BenchMailer), "welcome_user", [i, NAME, EMAIL],
                                      {}, {})


def _worker_config(workdir: Path, server: SmtpServer, mode: str) -> Path:
    path = workdir / f"jobkit-{mode}.yml"
    one_per_mail = "  max_messages_per_connection: 1\n" if mode == "before" else ""
    path.write_text(f"mailer:\n  delivery_method: smtp\n  smtp_url: {server.url}\n"
                    f"{one_per_mail}")
    return path


def _drain(server: SmtpServer, target: int, worker: subprocess.Popen, log: Path) -> None:
    deadline = time.perf_counter() + 120
    while server.count() < target:
        if worker.poll() is not None:
            raise RuntimeError(f"worker exited {worker.returncode}:\n{tail(log)}")
        if time.perf_counter() > deadline:
            raise TimeoutError(f"server has {server.count()} of {target} mails:\n{tail(log)}")
        time.sleep(DRAIN_POLL_SECONDS)


def later_rate(server: SmtpServer, url: str, workdir: Path, mode: str, n: int, warmup: int,
               samples: LaterSamples) -> None:
    """Time `n` deliver_later calls (no worker running), then start a worker for `mode` and
    time how fast it delivers them, from the `warmup`-th mail (the worker has started and
    opened its connections) to the last."""
    enqueue = enqueue_now if mode == "now" else enqueue_before
    warmup = min(max(warmup, 4), n // 2)
    before, connections = server.count(), server.count("connections")
    began = time.perf_counter()
    for i in range(n):
        enqueue(i)
    samples.enqueue.setdefault(mode, []).append(n / (time.perf_counter() - began))
    log = workdir / f"worker-{mode}.log"
    worker = start_worker([*WORKER_ARGV, "-C", str(_worker_config(workdir, server, mode))],
                          url, log)
    try:
        _drain(server, before + warmup, worker, log)
        warm = time.perf_counter()
        _drain(server, before + n, worker, log)
        samples.drain.setdefault(mode, []).append((n - warmup) / (time.perf_counter() - warm))
    finally:
        stop_process(worker, grace=10.0)
    if server.count() != before + n:
        raise RuntimeError(f"deliver_later {mode}: {server.count() - before} mails for {n}")
    samples.connections.setdefault(mode, []).append(server.count("connections") - connections)


def print_later(s: LaterSamples, n: int) -> None:
    print(f"deliver_later (N={n:,}; the worker: jobkit worker -c 2, prefork):")
    for mode, what in (("now", "render once, reused connections"),
                       ("before", "rendered again on the worker, a connection per mail")):
        print(f"  {mode:<7} worker {_median_spread(s.drain[mode])} mails/s, caller "
              f"{_median_spread(s.enqueue[mode])} deliver_later/s; {what}; connections "
              f"opened: {', '.join(map(str, s.connections[mode]))}")
    for name, rates in (("worker", s.drain), ("caller", s.enqueue)):
        ratio = statistics.median(rates["now"]) / statistics.median(rates["before"])
        target = " (target >= 2x)" if name == "worker" else ""
        print(f"  {name} ratio now / before: {ratio:.2f}x{target}")
    print()


def _median_spread(rates: list[float]) -> str:
    return f"{statistics.median(rates):>5,.0f} [{min(rates):,.0f}-{max(rates):,.0f}]"


# -- the report -------------------------------------------------------------------------------


def _rates(timings: list[Timing]) -> list[float]:
    return [t.rate for t in timings]


def _spread(timings: list[Timing]) -> str:
    rates = _rates(timings)
    return f"{statistics.median(rates):>8,.0f} [{min(rates):,.0f}-{max(rates):,.0f}]"


def print_table(s: Samples) -> None:
    rows = [("render + deliver (SMTP)", s.jobkit_deliver, "raw build + 1 connection", s.raw_send),
            ("render only (.message)", s.jobkit_render, "raw build only", s.raw_build)]
    header = (f"{'measure':<25} {'jobkit msgs/s':>27}  {'baseline':<23} {'baseline msgs/s':>25}"
              f"  {'ratio':>7}  {'CPU ratio':>9}")
    print(header)
    print("-" * len(header))
    for measure, ours, name, theirs in rows:
        ratio = statistics.median(_rates(ours)) / statistics.median(_rates(theirs))
        cpu_ratio = _cpu_ms(theirs) / _cpu_ms(ours)
        print(f"{measure:<25} {_spread(ours):>27}  {name:<23} {_spread(theirs):>25}  "
              f"{ratio:>6.2f}x  {cpu_ratio:>8.2f}x")
    print("\nmsgs/s: median [min-max] of wall-clock rates; ratio = median jobkit / median raw.\n"
          "CPU ratio = raw / jobkit median CPU time per message of this process (the same\n"
          "comparison, less sensitive to other load on the machine; the server's CPU excluded).")


@dataclass
class Split:
    """Per-message milliseconds of one side: the whole, the build, and the rest (SMTP)."""

    total: float
    build: float

    @property
    def smtp(self) -> float:
        return self.total - self.build

    def cells(self) -> str:
        return (f"{self.total:>8.3f} {self.build:>8.3f} ({self.build / self.total:>4.0%})"
                f" {self.smtp:>8.3f} ({self.smtp / self.total:>4.0%})")


def _wall_ms(timings: list[Timing]) -> float:
    return 1000.0 / statistics.median(_rates(timings))


def _cpu_ms(timings: list[Timing]) -> float:
    return statistics.median(t.cpu_ms for t in timings)


def print_breakdown(s: Samples) -> None:
    print(f"\n{'per message, ms (medians)':<32}{'total':>8} {'build':>8} {'':>6} {'SMTP':>8}"
          "  (SMTP = total - build)")
    for clock, ms in (("wall", _wall_ms), ("CPU of this process", _cpu_ms)):
        ours = Split(ms(s.jobkit_deliver), ms(s.jobkit_render))
        theirs = Split(ms(s.raw_send), ms(s.raw_build))
        print(f"  {clock}:")
        print(f"    {'jobkit':<28}{ours.cells()}")
        print(f"    {'raw':<28}{theirs.cells()}")
        print(f"    {'jobkit - raw':<28}{ours.total - theirs.total:>8.3f} "
              f"{ours.build - theirs.build:>8.3f} {'':>6} {ours.smtp - theirs.smtp:>8.3f}")


def print_context(server: SmtpServer, n: int, warmup: int, repeat: int, check: str) -> None:
    import aiosmtpd
    import aiosmtplib
    import jinja2

    print(f"jobkit mail vs raw aiosmtplib: Python {sys.version.split()[0]}, aiosmtplib "
          f"{aiosmtplib.__version__}, aiosmtpd {aiosmtpd.__version__}, Jinja2 "
          f"{jinja2.__version__}, {os.cpu_count()} CPUs, load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"counting aiosmtpd server in subprocess PID {server.proc.pid} at {server.url}; "
          f"N={n:,} messages per measurement after {warmup} warm-up, {repeat} repetition(s)")
    print(f"UserMailer.welcome vs hand-built: {check}\n")


# -- main -------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, help="messages per measurement (default 500)")
    parser.add_argument("--repeat", type=int, help="repetitions (default 3)")
    parser.add_argument("--warmup", type=int, default=20, help="untimed calls before each")
    parser.add_argument("--quick", action="store_true", help="n=100, repeat 1")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.n = args.n or (100 if args.quick else 500)
    args.repeat = args.repeat or (1 if args.quick else 3)
    if args.n < 1 or args.repeat < 1 or args.warmup < 0:
        parser.error("--n and --repeat must be at least 1, --warmup at least 0")
    return args


def benchmark(server: SmtpServer, url: str, workdir: Path, n: int, warmup: int, repeat: int
              ) -> tuple[Samples, LaterSamples]:
    mailer = configure_jobkit(server, url)
    print_context(server, n, warmup, repeat, check_equivalent(mailer))
    samples, later = Samples(), LaterSamples()
    for i in range(repeat):
        started = time.perf_counter()
        run_once(server, mailer, n, warmup, samples, jobkit_first=i % 2 == 0)
        for mode in ("now", "before") if i % 2 == 0 else ("before", "now"):
            later_rate(server, url, workdir, mode, n, warmup, later)
        print(f"repetition {i + 1}/{repeat} done in {time.perf_counter() - started:.1f} s",
              flush=True)
    print()
    return samples, later


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve:
        return serve()

    def body(workdir: Path) -> None:
        server = start_smtp_server(workdir)
        try:
            with private_redis(workdir) as url:
                samples, later = benchmark(server, url, workdir, args.n, args.warmup,
                                           args.repeat)
        finally:
            server.stop()
        print_later(later, args.n)
        print_table(samples)
        print_breakdown(samples)

    return run_main(body, prefix="jobkit-bench-mail-")


if __name__ == "__main__":
    sys.exit(main())
