"""The `jobkit` command."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import redis

from jobkit.config import POOLS, configure, default_config_path, load_settings, machine_notes
from jobkit.config_values import parse_queue
from jobkit.display import when
from jobkit.errors import ConfigError
from jobkit.job_sets import UnreadableEntryError
from jobkit.masking import mask_secrets, mask_url

__all__ = ["main", "mask_url"]


class _Main(click.Group):
    """Redis and settings errors end every command with one masked line, not a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except redis.RedisError as exc:
            raise click.ClickException(mask_secrets(
                f"cannot reach Redis: {type(exc).__name__}: {exc}")) from None
        except ConfigError as exc:
            raise click.ClickException(mask_secrets(str(exc))) from None


@click.group(cls=_Main)
@click.version_option(package_name="jobkit")
def main() -> None:
    """jobkit: background jobs on Celery + Redis, the Rails way."""


def _app_importable() -> None:
    """The app in the current directory importable first (its jobs, mailers, previews), as
    Celery's -A finds it; once, however many commands run in this process."""
    cwd = os.getcwd()
    if sys.path[:1] != [cwd]:
        sys.path.insert(0, cwd)


# -C for every command that reads the settings file (worker, config check, web).
config_file_option = click.option(
    "-C", "--config", "config_path", type=click.Path(dir_okay=False),
    help="YAML settings file (default: JOBKIT_CONFIG, then config/jobkit.yml).")


@main.command(context_settings={"ignore_unknown_options": True})
@config_file_option
@click.option("-e", "--environment", help="Section of the file to use (default: JOBKIT_ENV, "
              "APP_ENV, then development).")
@click.option("-c", "--concurrency", type=click.IntRange(min=1), help="Processes or threads.")
@click.option("-q", "--queue", "queues", multiple=True, metavar="QUEUE[,WEIGHT]",
              help="A queue to consume; repeat for more (default: the configured queues).")
@click.option("-r", "--require", multiple=True, metavar="MODULE", help="Import at start.")
@click.option("-P", "--pool", type=click.Choice(POOLS))
@click.option("-l", "--loglevel", default="INFO", show_default=True)
@click.option("-n", "--hostname", help="Node name (Celery's %h/%n forms work).")
@click.option("--on-demand-slot", type=click.IntRange(min=0), hidden=True,
              help="Started by jobkit.on_demand in this slot: exit after idle_timeout.")
@click.option("--idle-timeout", type=click.FloatRange(min=0, min_open=True), hidden=True,
              help="With --on-demand-slot: seconds without work before exiting.")
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
def worker(config_path: str | None, environment: str | None, concurrency: int | None,
           queues: tuple[str, ...], require: tuple[str, ...], pool: str | None, loglevel: str,
           hostname: str | None, on_demand_slot: int | None, idle_timeout: float | None,
           celery_args: tuple[str, ...]) -> None:
    """Run a worker: a Celery worker on jobkit's app. Extra arguments go to Celery."""
    for arg in celery_args:  # Celery's -P takes its own pools (threads without soft limits,
        # no asyncio) and, given `prefork`, silently the configured one: only jobkit's names it
        if arg in ("-P", "--pool") or arg.startswith(("-P", "--pool=")):
            raise click.UsageError(f"{arg} after --: the pool is jobkit's option, not Celery's; "
                                   f"give -P before -- or pool: in the settings file (one of "
                                   f"{', '.join(POOLS)})")
    settings = configure(  # a ConfigError becomes one masked line (_Main.invoke)
        config_path, environment, concurrency=concurrency, pool=pool,
        queues=[parse_queue(q, "-q") for q in queues] or None,
    )
    for note in (*settings.notes, *machine_notes(settings)):
        click.echo(f"jobkit: note: {note}", err=True)
    _app_importable()
    for module in (*settings.require, *require):
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise click.ClickException(f"cannot import {module!r} (from -r / require): {exc}"
                                       ) from None
    from jobkit.celery_app import app, apply_settings
    from jobkit.periodic import check_classes
    from jobkit.redis_client import get_redis, refuse_cluster
    from jobkit.worker.plain_tasks import QUEUES_GIVEN

    check_classes(settings.schedule)  # a ConfigError naming the entry (_Main.invoke)
    if on_demand_slot is not None:
        from jobkit.worker import idle

        idle.on_demand[:] = [idle.OnDemand(on_demand_slot,
                                           idle_timeout or settings.idle_timeout)]

    with contextlib.suppress(redis.RedisError):  # not reachable yet: the worker retries
        refuse_cluster(get_redis())  # a Redis Cluster: one line (_Main.invoke)
    apply_settings(app, settings)
    app.conf[QUEUES_GIVEN] = bool(queues)
    # No -P: Celery's default takes the app's worker_pool, jobkit's pool (apply_settings)
    argv = ["worker", "-Q", ",".join(settings.queue_names), "-c", str(settings.concurrency),
            "-l", loglevel]
    if hostname:
        argv += ["-n", hostname]
    app.worker_main(argv=[*argv, *celery_args])


@main.group()
def config() -> None:
    """Inspect settings."""


@config.command("check")
@config_file_option
@click.option("-e", "--environment", help="Environment section to resolve.")
def config_check(config_path: str | None, environment: str | None) -> None:
    """Validate the settings and print them as resolved (secrets in URLs masked)."""
    path = config_path or default_config_path()
    _app_importable()  # the app's job classes, as the worker finds them
    try:
        settings = load_settings(path, environment)
        from jobkit.periodic import check_classes

        check_classes(settings.schedule)
        from jobkit.mailer.smtp import SmtpSettings

        SmtpSettings.from_mailer(settings.mailer)  # the SMTP keys together (tls vs STARTTLS)
    except ConfigError as exc:
        click.echo(f"error: {mask_secrets(str(exc))}", err=True)
        sys.exit(1)
    redis_note = _check_redis(settings)
    click.echo(f"# {path or '(no file: defaults and environment)'}, "
               f"environment {settings.environment}: OK")
    click.echo(f"# redis: {redis_note}")
    for note in (*settings.notes, *machine_notes(settings)):
        click.echo(f"# note: {note}")
    for field in dataclasses.fields(settings):
        if field.name in ("notes", "source"):
            continue
        if field.name == "schedule":
            for entry in settings.schedule:
                click.echo(f"schedule: {entry.name}: {entry.schedule_text} -> "
                           f"{entry.job_class}")
            continue
        value = getattr(settings, field.name)
        if field.name == "redis_url":
            value = mask_url(value)
        elif field.name in ("mailer", "web"):
            value = {k: mask_url(v) if isinstance(v, str) else v for k, v in value.items()}
        elif field.name == "queues":
            value = ", ".join(f"{name}" if weight == 1 else f"{name},{weight}"
                              for name, weight in value)
        click.echo(f"{field.name}: {mask_secrets(str(value))}")


REDIS_CHECK_SECONDS = 3.0


def _check_redis(settings: Any) -> str:
    """Refuse a Redis Cluster (exit 1, one line); otherwise say whether Redis answered within
    REDIS_CHECK_SECONDS (in a thread: unresponsive sentinels would retry for minutes)."""
    from jobkit.redis_client import client_for, refuse_cluster

    outcome: list[BaseException | None] = []

    def check() -> None:
        try:
            client = client_for(settings.redis_url, settings.sentinel_master,
                                timeout=REDIS_CHECK_SECONDS)
            refuse_cluster(client)
            client.ping()
            outcome.append(None)
        except Exception as exc:
            outcome.append(exc)

    thread = threading.Thread(target=check, name="jobkit-config-check", daemon=True)
    thread.start()
    thread.join(REDIS_CHECK_SECONDS + 1)
    if not outcome:
        return f"not reachable now (no answer within {REDIS_CHECK_SECONDS:.0f} s)"
    error = outcome[0]
    if isinstance(error, ConfigError):
        click.echo(f"error: {mask_secrets(str(error))}", err=True)
        sys.exit(1)
    if error is not None:
        return f"not reachable now ({mask_secrets(str(error))})"
    return "reachable, not a cluster"


def _short(text: str, limit: int = 80) -> str:
    """At most `limit` characters of `text`, on one line."""
    text = text.replace("\n", "\\n").replace("\r", "\\r")
    return text if len(text) <= limit else text[:limit - 3] + "..."


@main.group("queues", invoke_without_command=True)
@click.pass_context
def queues_command(ctx: click.Context) -> None:
    """Queues with their size and latency, or remove an empty one's name."""
    if ctx.invoked_subcommand is not None:
        return
    from jobkit import api

    click.echo(f"{'queue':<24} {'size':>8} {'latency':>10}")
    for queue in api.queues():  # a name that is not UTF-8 shows its bytes escaped (\xff)
        click.echo(f"{queue.name:<24} {queue.size():>8} {queue.latency():>9.1f}s")


@queues_command.command("remove")
@click.argument("name")
def queues_remove(name: str) -> None:
    """Stop listing queue NAME, if no job waits in it (enqueueing to it lists it again)."""
    from jobkit import api

    try:
        removed = api.Queue(name).remove()
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"removed queue {name!r}" if removed else f"queue {name!r} was not listed")


@main.command("stats")
@click.option("--days", default=7, show_default=True)
def stats_command(days: int) -> None:
    """Processed and failed counts, total and per day."""
    from jobkit import api

    stats = api.Stats()
    click.echo(f"processed {stats.processed}  failed {stats.failed}")
    for day, (processed, failed) in stats.history(days).items():
        click.echo(f"{day}  processed {processed:>8}  failed {failed:>8}")


@main.command("processes")
def processes_command() -> None:
    """Live worker processes and the jobs each holds."""
    from jobkit import api

    for process in api.processes():
        click.echo(f"{process.id}  pool {process.pool or '?'}  beat {when(process.beat_at)}  "
                   f"holding {len(process.in_flight)}")
        for job in process.in_flight:
            if job.problem:
                click.echo(f"    (unreadable: {job.problem}) {_short(job.text)}")
            else:
                click.echo(f"    {job.job_class} {job.job_id}")


@main.command("cancel")
@click.argument("job_id")
@click.option("--hard", is_flag=True, help="Also stop it if it runs (prefork: its pool "
              "process is killed; asyncio: an async job's task is cancelled; otherwise it "
              "must check job.cancelled).")
def cancel_command(job_id: str, hard: bool) -> None:
    """Cancel job JOB_ID: a waiting job is removed (kept in the dead set, reason "cancelled");
    a running one sees job.cancelled. Exit status 1 when no queue, set or worker holds it."""
    from jobkit import cancellation

    try:
        result = cancellation.cancel(job_id, hard)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    if result.outcome == "not_found":
        raise click.ClickException(str(result))
    click.echo(str(result))


@main.group("periodic", invoke_without_command=True)
@click.pass_context
def periodic_command(ctx: click.Context) -> None:
    """Periodic jobs: list them (next and last run, last job id), or pause, resume, run one."""
    if ctx.invoked_subcommand is not None:
        return
    from jobkit import periodic

    click.echo(f"{'name':<24} {'schedule':<28} {'state':<8} {'next run':<23} "
               f"{'last run':<23} last job")
    for state in periodic.states():
        entry = state.entry
        last = when(state.last_tick.timestamp()) if state.last_tick else "-"
        last += " (skipped)" if state.last_tick_skipped else ""
        click.echo(f"{entry.name:<24} {entry.schedule_text:<28} {state.status:<8} "
                   f"{when(state.next_tick.timestamp()):<23} {last:<23} "
                   f"{state.last_job_id or '-'}")
        click.echo(f"    {entry.job_class} {entry.arguments_text}"
                   + (f" queue={entry.queue}" if entry.queue else "")
                   + (f"  # {entry.description}" if entry.description else ""))


@contextlib.contextmanager
def _known_entry() -> Iterator[None]:
    """An unknown entry name (jobkit.periodic's KeyError) is one line, exit 1."""
    try:
        yield
    except KeyError as exc:
        raise click.ClickException(str(exc.args[0])) from None


@periodic_command.command("pause")
@click.argument("name")
def periodic_pause(name: str) -> None:
    """Enqueue no tick of NAME until resumed."""
    from jobkit import periodic

    with _known_entry():
        periodic.pause(name)
    click.echo(f"{name}: paused")


@periodic_command.command("resume")
@click.argument("name")
def periodic_resume(name: str) -> None:
    """Enqueue NAME's ticks again, from the next one."""
    from jobkit import periodic

    with _known_entry():
        periodic.resume(name)
    click.echo(f"{name}: resumed")


@periodic_command.command("run")
@click.argument("name")
def periodic_run(name: str) -> None:
    """Enqueue NAME's job now, outside its schedule."""
    from jobkit import periodic

    with _known_entry():
        job = periodic.run_now(name)
    click.echo(f"{name}: enqueued: job {job.job_id}")


@main.command("systemd")
@config_file_option
@click.option("-e", "--environment", default="production", show_default=True,
              help="The environment the service runs.")
@click.option("--user", help="The user the service runs as (default: systemd's, root).")
@click.option("--instances", is_flag=True,
              help="A template unit (jobkit-worker@.service): one worker per instance name.")
def systemd_command(config_path: str | None, environment: str, user: str | None,
                    instances: bool) -> None:
    """Print a systemd unit for a worker of this app (service mode): TERM gives running jobs
    `timeout` seconds, then hands them back to their queues."""
    path = config_path or default_config_path()
    settings = load_settings(path, environment)
    name = "jobkit-worker@.service" if instances else "jobkit-worker.service"
    command = f"{sys.executable} -m jobkit worker -e {environment}"
    if path:
        command += f" -C {os.path.abspath(path)}"
    if instances:
        command += " -n %i@%%h"  # Celery's %h, escaped from systemd's own specifiers
    lines = [
        f"# /etc/systemd/system/{name}: written by `jobkit systemd`",
        "[Unit]",
        f"Description=jobkit worker{' %i' if instances else ''} ({os.getcwd()})",
        "After=network-online.target redis-server.service",
        "Wants=network-online.target",
        "",
        "[Service]",
        "Type=simple",
        *([f"User={user}"] if user else []),
        f"WorkingDirectory={os.getcwd()}",
        f"Environment=JOBKIT_ENV={environment}",
        f"ExecStart={command}",
        "# TERM to the main process: running jobs get `timeout` s, then are handed back",
        "ExecStop=/bin/kill -TERM $MAINPID",
        "ExecReload=/bin/kill -TSTP $MAINPID",
        "KillMode=mixed",
        "KillSignal=SIGTERM",
        f"TimeoutStopSec={int(settings.timeout) + 10}",
        "Restart=always",
        "RestartSec=1",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
    ]
    click.echo("\n".join(lines))


def _set_commands(name: str, set_name: str, verb: str, help_text: str) -> click.Group:
    """`jobkit <name>` lists a job set; `<verb>` and `delete` act on entries by job id."""

    @click.group(name, invoke_without_command=True, help=help_text)
    @click.option("--limit", default=25, show_default=True)
    @click.pass_context
    def group(ctx: click.Context, limit: int) -> None:
        if ctx.invoked_subcommand is not None:
            return
        job_set = _job_set(set_name)
        click.echo(f"{job_set.size()} in {name}")
        for entry in job_set.page(0, limit):
            if entry.problem:  # named by its key, which `delete` takes
                click.echo(f"{when(entry.score)}  (unreadable: {entry.problem})  {entry.key}  "
                           f"{_short(entry.text)}")
                continue
            error = f"  {entry.error_class}: {entry.error_message}" if entry.error_class else ""
            click.echo(f"{when(entry.score)}  {entry.job_class}  {entry.job_id or entry.key}"
                       f"{error}")

    def act(action: str) -> click.Command:
        @click.command(action, help=f"{action.capitalize()} entries by job id or by key as "
                       "listed (or --all).")
        @click.argument("job_ids", nargs=-1)
        @click.option("--all", "everything", is_flag=True)
        def command(job_ids: tuple[str, ...], everything: bool) -> None:
            job_set = _job_set(set_name)
            if not job_ids and not everything:
                raise click.UsageError("give job ids, or --all")
            chosen = list(job_set) if everything else [
                job_set.fetch_key(i) or job_set.find(i) for i in job_ids]
            missing = [i for i, entry in zip(job_ids, chosen, strict=False) if entry is None]
            done, refused = 0, []
            for entry in filter(None, chosen):
                if action == "delete":
                    done += bool(job_set.delete(entry))
                    continue
                try:
                    done += bool(job_set.push_now(entry))
                except UnreadableEntryError as exc:
                    refused.append(f"{entry.key} ({exc})")
            click.echo(f"{action}: {done} job(s)")
            problems = []
            if refused:
                problems.append(f"refused, cannot be read: {', '.join(refused)}; delete them "
                                f"with: jobkit {name} delete KEY")
            if missing:
                problems.append(f"not in {name}: {', '.join(missing)}")
            if problems:
                raise click.ClickException("\n".join(problems))

        return command

    group.add_command(act(verb))
    group.add_command(act("delete"))
    return group


def _job_set(name: str) -> Any:
    from jobkit import api

    return {"scheduled": api.ScheduledSet, "retry": api.RetrySet, "dead": api.DeadSet}[name]()


main.add_command(_set_commands("scheduled", "scheduled", "run", "Scheduled (delayed) jobs."))
main.add_command(_set_commands("retries", "retry", "retry", "Failed jobs waiting to retry."))
main.add_command(_set_commands("dead", "dead", "retry", "Jobs out of retries (the morgue)."))


@main.group()
def mail() -> None:
    """Mailers: previews."""


@mail.command("preview")
@click.argument("spec", metavar="MAILER.EMAIL")
@click.option("--part", type=click.Choice(["all", "text", "html", "raw"]), default="all",
              show_default=True)
@click.option("--param", "-p", "params", multiple=True, metavar="KEY=VALUE",
              help="A parameter for the preview (its self.params); repeatable.")
def mail_preview(spec: str, part: str, params: tuple[str, ...]) -> None:
    """Render a preview (e.g. UserMailer.welcome) without sending it."""
    from jobkit.mailer import MailerError
    from jobkit.mailer.previews import render_preview

    _app_importable()
    try:
        message = render_preview(spec, _preview_params(params))
    except MailerError as exc:
        raise click.ClickException(mask_secrets(str(exc))) from None
    if part == "raw":  # the serializer SMTP delivery uses: these are the bytes it would send
        from jobkit.mailer.headers import wire_bytes
        from jobkit.mailer.message import needs_smtputf8

        sys.stdout.flush()
        sys.stdout.buffer.write(wire_bytes(message, utf8=needs_smtputf8(message)))
        return
    text, html = message.get_body(("plain",)), message.get_body(("html",))
    if part == "all":
        for name, value in message.items():
            if name.lower() not in ("content-type", "mime-version"):
                click.echo(f"{name}: {value}")
        attached = [p.get_filename() for p in message.walk()
                    if p.get_content_disposition() in ("attachment", "inline")]
        click.echo(f"Attachments: {', '.join(filter(None, attached)) or '-'}\n")
    if part in ("all", "text") and text is not None:
        click.echo(text.get_content())
    if part in ("all", "html") and html is not None:
        click.echo(html.get_content())


def _preview_params(pairs: tuple[str, ...]) -> dict[str, str]:
    params: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r}: want KEY=VALUE", param_hint="--param")
        params[key] = value
    return params


@main.group()
def generate() -> None:
    """Write a job or a mailer with its test (rails g job / rails g mailer)."""


_force_option = click.option("--force", is_flag=True,
                             help="Overwrite generated files that exist (shared ones never).")
_tests_dir_option = click.option("--tests-dir", default="tests", show_default=True,
                                 help="Folder of the generated test.")


_WRITTEN_NOTES = {"skip": "  (exists: --force to overwrite)", "exist": "  (exists: kept)"}


def _report_written(written: list[Any]) -> None:
    for file in written:
        click.echo(f"{file.status:>10}  {file.path}{_WRITTEN_NOTES.get(file.status, '')}")


@generate.command("job")
@click.argument("name")
@click.option("--dir", "directory", help="Package folder of the job, relative to the current "
              "directory (default: the first package of the `require` setting that is a "
              "folder here, else jobs).")
@_tests_dir_option
@click.option("--queue", default="default", show_default=True, help="The job's queue_as.")
@_force_option
def generate_job_command(name: str, directory: str | None, tests_dir: str, queue: str,
                         force: bool) -> None:
    """A job class NAME (welcome, WelcomeJob: jobs/welcome_job.py) and its test."""
    from jobkit.generators import GeneratorError, generate_job, jobs_folder

    if directory is None:
        directory = jobs_folder(".", load_settings(default_config_path()).require)
    try:
        _report_written(generate_job(name, ".", directory, tests_dir, queue, force))
    except GeneratorError as exc:
        raise click.UsageError(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"cannot write: {exc}") from None


@generate.command("mailer")
@click.argument("name")
@click.argument("actions", nargs=-1, required=True, metavar="ACTION...")
@click.option("--dir", "directory", default="mailers", show_default=True,
              help="Package folder of the mailer, relative to the current directory.")
@_tests_dir_option
@_force_option
def generate_mailer_command(name: str, actions: tuple[str, ...], directory: str,
                            tests_dir: str, force: bool) -> None:
    """A mailer NAME (user, UserMailer: mailers/user_mailer.py) with ACTIONs: templates, a
    preview and a test."""
    from jobkit.generators import GeneratorError, generate_mailer

    try:
        _report_written(generate_mailer(name, actions, ".", directory, tests_dir, force))
    except GeneratorError as exc:
        raise click.UsageError(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"cannot write: {exc}") from None


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=1025, show_default=True, type=int)
def mailcatcher(host: str, port: int) -> None:
    """A local SMTP server that keeps what it receives (shown at /mail/inbox by jobkit web)."""
    import threading

    from jobkit.mailer.catcher import start_catcher

    controller = start_catcher(host, port)
    click.echo(f"mailcatcher: smtp://{host}:{port}  (Ctrl-C stops it)")
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        controller.stop()


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=3000, show_default=True, type=int)
@config_file_option
@click.option("-e", "--environment", help="Outside development, auth is required.")
def web(host: str, port: int, config_path: str | None, environment: str | None) -> None:
    """Serve the web app (dashboard, sets, status.json, mail) with a small threaded server."""
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIServer, make_server

    from jobkit.web import create_app

    class Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True

    configure(config_path, environment)
    _app_importable()
    with make_server(host, port, create_app(), server_class=Server) as server:
        click.echo(f"jobkit web: http://{host}:{port}/")
        with contextlib.suppress(KeyboardInterrupt):
            server.serve_forever()


@main.command(context_settings={"ignore_unknown_options": True})
@click.option("--port", default=5555, show_default=True, type=int)
@click.option("--address", default="127.0.0.1", show_default=True)
@click.argument("flower_args", nargs=-1, type=click.UNPROCESSED)
def flower(port: int, address: str, flower_args: tuple[str, ...]) -> None:
    """Flower on jobkit's broker. Basic auth from FLOWER_BASIC_AUTH (user:password,...) or
    JOBKIT_WEB_USERNAME / JOBKIT_WEB_PASSWORD when set."""
    celery = str(Path(sys.executable).with_name("celery"))
    argv = [celery, "-A", "jobkit.celery_app", "flower", f"--port={port}",
            f"--address={address}"]
    auth = os.environ.get("FLOWER_BASIC_AUTH") or (
        f"{os.environ['JOBKIT_WEB_USERNAME']}:{os.environ['JOBKIT_WEB_PASSWORD']}"
        if os.environ.get("JOBKIT_WEB_USERNAME") and os.environ.get("JOBKIT_WEB_PASSWORD")
        else None)
    if auth:  # through the environment, so `ps` does not show it
        os.environ["FLOWER_BASIC_AUTH"] = auth
    os.execv(celery, [*argv, *flower_args])
