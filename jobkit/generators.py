"""`jobkit generate job` / `jobkit generate mailer`: the files `rails g job` and `rails g mailer`
write, in this kit's layout (jobs/, mailers/ with templates/ and previews/, tests/).

Every name is checked and every target path checked (not a folder, no file in its way, a
name the file system takes) before one file is written, so bad input writes nothing. A file
that exists is never overwritten without `force`; the files several generated classes share
(a package's ``__init__.py``, ``application_mailer.py``, the mail layouts, the root
``conftest.py``) only ever get created.
"""

from __future__ import annotations

import keyword
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from string import Template
from typing import Literal

from jobkit.errors import JobkitError
from jobkit.mailer import Mailer

__all__ = ["GeneratorError", "Written", "generate_job", "generate_mailer", "jobs_folder"]

Status = Literal["create", "force", "identical", "skip", "exist"]


class GeneratorError(JobkitError, ValueError):
    """A name or a folder the generators cannot use; the message names it."""


@dataclass(frozen=True)
class Written:
    """What happened to one file: `create`d, overwritten (`force`), left as it was because it
    holds the same text (`identical`) or because it exists (`skip`: a generated file, give
    `force` to overwrite; `exist`: a shared file, never overwritten)."""

    path: Path
    status: Status


@dataclass(frozen=True)
class _File:
    path: Path
    text: str
    shared: bool = False  # created when missing, never overwritten


_WORD = re.compile(r"[A-Za-z][A-Za-z0-9_-]*\Z")
_SNAKE = re.compile(r"[a-z][a-z0-9]*(_[a-z0-9]+)*\Z")
_ACTION = re.compile(r"[a-z][a-z0-9_]*\Z")
_NAME_HELP = ("use letters, digits, _ and -, starting with a letter (welcome, Welcome, "
              "WelcomeJob, welcome_job)")
#: Longest name or action: its files' names (test_<name>_mailer_preview.py...) stay far below
#: the 255 bytes file systems take.
MAX_NAME = 100
#: Longest file name (one path component), in bytes, on common file systems.
_MAX_COMPONENT = 255


def _underscore(word: str) -> str:
    """Rails' String#underscore: WelcomeJob -> welcome_job, HTMLParser -> html_parser."""
    word = re.sub(r"([A-Z\d]+)([A-Z][a-z])", r"\1_\2", word)
    word = re.sub(r"([a-z\d])([A-Z])", r"\1_\2", word)
    return word.replace("-", "_").lower()


def _camelize(snake: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in snake.split("_"))


def _base_name(raw: str, suffix: str, what: str) -> str:
    """`welcome`, `Welcome`, `WelcomeJob`, `welcome_job` -> `welcome` (suffix `job`)."""
    if len(raw) > MAX_NAME:
        raise GeneratorError(f"{what} name {raw[:20]!r}... is too long ({len(raw)} "
                             f"characters): at most {MAX_NAME}")
    if not _WORD.match(raw):
        raise GeneratorError(f"{what} name {raw!r} is not valid: {_NAME_HELP}")
    snake = _underscore(raw)
    if not _SNAKE.match(snake):
        raise GeneratorError(f"{what} name {raw!r} is not valid ({snake!r}): {_NAME_HELP}")
    base = snake.removesuffix(f"_{suffix}")
    if base == "test" or base.startswith("test_"):
        raise GeneratorError(f"{what} name {raw!r} would make {base}_{suffix}.py, a file pytest "
                             f"collects as tests: choose another name")
    return base


def _package(folder: str, option: str) -> tuple[PurePosixPath, str]:
    """A folder relative to the project root, and its module path (app/jobs -> app.jobs)."""
    path = PurePosixPath(folder.replace("\\", "/").rstrip("/"))
    parts = path.parts
    if path.is_absolute() or not parts or not all(
            p.isidentifier() and not keyword.iskeyword(p) for p in parts):
        raise GeneratorError(f"{option} {folder!r} is not an importable package folder "
                             f"relative to the project root (like jobs or app/jobs)")
    return path, ".".join(parts)


def _render(template: str, **values: str) -> str:
    return Template(template).substitute(values)


def _plan(root: Path, file: _File, force: bool) -> Status:
    """What writing `file` would do; GeneratorError when it cannot be written (nothing is
    written before every file passed)."""
    target = root / file.path
    for part in file.path.parts:
        if len(os.fsencode(part)) > _MAX_COMPONENT:
            raise GeneratorError(f"{file.path}: the name {part[:20]!r}... is too long for a "
                                 f"file system (over {_MAX_COMPONENT} bytes)")
    for parent in reversed(file.path.parents[:-1]):  # root/a, root/a/b, ...
        if (root / parent).exists() and not (root / parent).is_dir():
            raise GeneratorError(f"{parent} is a file, not a folder: cannot write {file.path}")
    if target.is_dir():
        raise GeneratorError(f"{file.path} is a folder, not a file")
    if not target.exists():
        return "create"
    if not target.is_file():
        raise GeneratorError(f"{file.path} is not a regular file")
    try:
        same = target.read_bytes() == file.text.encode()
    except OSError as exc:
        raise GeneratorError(f"{file.path} cannot be read: {exc.strerror}") from None
    if same:
        return "identical"
    if file.shared:
        return "exist"
    return "force" if force else "skip"


def _write(root: Path, files: list[_File], force: bool) -> list[Written]:
    if not root.is_dir():
        raise GeneratorError(f"{root} is not a folder")
    plans = [Written(file.path, _plan(root, file, force)) for file in files]
    for file, plan in zip(files, plans, strict=True):
        if plan.status in ("create", "force"):
            target = root / file.path  # OSError left (a full disk...): not the input's fault
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(file.text.encode())
    return plans


ROOT_CONFTEST = '''"""pytest loads this file first and puts its folder, the project root, on
sys.path: the tests import the project's packages (jobs, mailers) with plain `pytest`, as
with `python -m pytest`."""
'''


def _root_conftest() -> _File:
    """A root ``conftest.py`` (created when missing), for the generated tests' imports."""
    return _File(Path("conftest.py"), ROOT_CONFTEST, shared=True)


def _init_files(folder: PurePosixPath) -> list[_File]:
    """The folder's ``__init__.py`` (empty), created when missing."""
    return [_File(Path(folder, "__init__.py"), "", shared=True)]


# -- job ---------------------------------------------------------------------------------------

def jobs_folder(root: Path | str, require: tuple[str, ...] | list[str]) -> str:
    """Where jobs live in this project: the first module of the `require` setting that is a
    package folder under `root` (``app.jobs`` -> ``app/jobs``), else ``jobs``."""
    for module in require:
        if Path(root, *module.split("."), "__init__.py").is_file():
            return "/".join(module.split("."))
    return "jobs"


JOB = '''"""$class_name: a background job."""

from __future__ import annotations

from jobkit import Job


class $class_name(Job):
    queue_as = "$queue"

    def perform(self, *args: object) -> None:
        # Do something later
        pass
'''

JOB_TEST = '''"""$class_name, run with jobkit.testing's fake mode (jobs recorded, not sent)."""

from jobkit import testing

from $module import $class_name


def test_${snake}_is_enqueued(jobkit_fake):
    $class_name.perform_later()
    testing.assert_enqueued_with(job=$class_name, args=[], queue="$queue")


def test_${snake}_performs(jobkit_fake):
    $class_name.perform_later()
    testing.perform_enqueued_jobs()
    testing.assert_performed_jobs(1, only=$class_name)
'''


def generate_job(name: str, root: Path | str = ".", directory: str = "jobs",
                 tests_directory: str = "tests", queue: str = "default",
                 force: bool = False) -> list[Written]:
    """Write ``<directory>/<name>_job.py`` (a Job subclass on `queue`) and
    ``<tests_directory>/test_<name>_job.py``; returns what happened to each file."""
    base = _base_name(name, "job", "job")
    folder, package = _package(directory, "--dir")
    tests, _ = _package(tests_directory, "--tests-dir")
    if not queue or any(c.isspace() or c in "\"'\\" for c in queue):
        raise GeneratorError(f"--queue {queue!r} is not a queue name")
    snake, class_name = f"{base}_job", _camelize(base) + "Job"
    values = dict(class_name=class_name, snake=snake, module=f"{package}.{snake}", queue=queue)
    return _write(Path(root), [
        *_init_files(folder),
        _File(Path(folder, f"{snake}.py"), _render(JOB, **values)),
        _File(Path(tests, f"test_{snake}.py"), _render(JOB_TEST, **values)),
        _root_conftest(),
    ], force)


# -- mailer ------------------------------------------------------------------------------------

APPLICATION_MAILER = '''"""Defaults every mailer of the application shares."""

from __future__ import annotations

from typing import ClassVar

from jobkit.mailer import Mailer


class ApplicationMailer(Mailer):
    default: ClassVar[dict[str, str]] = {"from": "from@example.com"}
    layout = "mailer"
'''

LAYOUT_TXT = '''{{ content }}
'''

LAYOUT_HTML = '''<!DOCTYPE html>
<html>
  <head>
    <meta http-equiv="Content-Type" content="text/html; charset=utf-8">
  </head>
  <body>
    {{ content }}
  </body>
</html>
'''

MAILER = '''"""$class_name: $actions_listed."""

from __future__ import annotations

from typing import Any

from $package.application_mailer import ApplicationMailer


class $class_name(ApplicationMailer):
$methods'''

MAILER_ACTION = '''    def $action(self) -> Any:
        self.greeting = "Hi"
        return self.mail(to="to@example.org", subject="$subject")
'''

ACTION_TXT = '''$class_name#$action

{{ greeting }}, find me in $path
'''

ACTION_HTML = '''<h1>$class_name#$action</h1>

<p>
  {{ greeting }}, find me in $path
</p>
'''

PREVIEW = '''"""Previews of $class_name: `jobkit mail preview $class_name.$first`, or
/mail/previews in `jobkit web`."""

from __future__ import annotations

from typing import Any

from jobkit.mailer import Preview

from $module import $class_name


class ${class_name}Preview(Preview):
$methods'''

PREVIEW_ACTION = '''    def $action(self) -> Any:
        return $class_name.$action()
'''

MAILER_TEST = '''"""$class_name: each action built and delivered to jobkit's test outbox."""

from jobkit import testing

from $module import $class_name
$tests'''

MAILER_ACTION_TEST = '''

def test_$action(jobkit_outbox):
    mail = $class_name.$action().deliver_now()
    assert mail is not None
    assert mail["Subject"] == "$subject"
    assert mail["To"] == "to@example.org"
    text, html = mail.get_body(("plain",)), mail.get_body(("html",))
    assert text is not None and "Hi" in text.get_content()
    assert html is not None and "Hi" in html.get_content()
    assert [m["Subject"] for m in jobkit_outbox] == ["$subject"]


def test_${action}_later(jobkit_fake):
    $class_name.$action().deliver_later()
    testing.assert_enqueued_email_with($class_name.$action)
'''


def _action_names(actions: list[str] | tuple[str, ...]) -> list[str]:
    if not actions:
        raise GeneratorError("give the mailer at least one action: "
                             "jobkit generate mailer User welcome password_reset")
    seen: list[str] = []
    for action in actions:
        if len(action) > MAX_NAME:
            raise GeneratorError(f"action {action[:20]!r}... is too long ({len(action)} "
                                 f"characters): at most {MAX_NAME}")
        if not _ACTION.match(action) or keyword.iskeyword(action):
            raise GeneratorError(f"action {action!r} is not valid: a method name in "
                                 f"snake_case (welcome, password_reset)")
        if hasattr(Mailer, action):
            raise GeneratorError(f"action {action!r} would hide Mailer.{action}: "
                                 f"choose another name")
        if action in seen:
            raise GeneratorError(f"action {action!r} is given twice")
        seen.append(action)
    return seen


def generate_mailer(name: str, actions: list[str] | tuple[str, ...], root: Path | str = ".",
                    directory: str = "mailers", tests_directory: str = "tests",
                    force: bool = False) -> list[Written]:
    """Write the mailer class, a text and an HTML template per action, a preview and a test
    (plus ``application_mailer.py`` and the layouts when missing); returns what happened to
    each file."""
    base = _base_name(name, "mailer", "mailer")
    if base == "application":
        raise GeneratorError("ApplicationMailer is the mailers' shared base class: "
                             "choose another name")
    names = _action_names(actions)
    folder, package = _package(directory, "--dir")
    tests, _ = _package(tests_directory, "--tests-dir")
    snake, class_name = f"{base}_mailer", _camelize(base) + "Mailer"
    # The folder Mailer.mailer_name gives the class (UserMailer -> user_mailer).
    templates = PurePosixPath(folder, "templates",
                              Mailer.mailer_name.__func__(type(class_name, (), {})))
    module = f"{package}.{snake}"
    subjects = {a: a.replace("_", " ").capitalize() for a in names}
    files = [
        *_init_files(folder),
        _File(Path(folder, "application_mailer.py"), APPLICATION_MAILER, shared=True),
        _File(Path(folder, "templates", "layouts", "mailer.txt.j2"), LAYOUT_TXT, shared=True),
        _File(Path(folder, "templates", "layouts", "mailer.html.j2"), LAYOUT_HTML,
              shared=True),
        _File(Path(folder, f"{snake}.py"), _render(
            MAILER, class_name=class_name, package=package,
            actions_listed=", ".join(names),
            methods="\n".join(_render(MAILER_ACTION, action=a, subject=subjects[a])
                              for a in names))),
    ]
    for action in names:
        for ext, template in (("txt", ACTION_TXT), ("html", ACTION_HTML)):
            path = templates / f"{action}.{ext}.j2"
            files.append(_File(Path(path), _render(template, class_name=class_name,
                                                   action=action, path=str(path))))
    files += [
        *_init_files(folder / "previews"),
        _File(Path(folder, "previews", f"{snake}_preview.py"), _render(
            PREVIEW, class_name=class_name, module=module, first=names[0],
            methods="\n".join(_render(PREVIEW_ACTION, class_name=class_name, action=a)
                              for a in names))),
        _File(Path(tests, f"test_{snake}.py"), _render(
            MAILER_TEST, class_name=class_name, module=module,
            tests="".join(_render(MAILER_ACTION_TEST, class_name=class_name, action=a,
                                  subject=subjects[a]) for a in names))),
        _root_conftest(),
    ]
    return _write(Path(root), files, force)
