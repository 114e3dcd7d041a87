"""`jobkit generate job` / `generate mailer`, used as a user would: the files land in the
project's layout, the generated tests pass as generated (and fail when the code is broken),
ruff accepts the generated code, names normalize as Rails', bad input writes nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from jobkit.cli import main
from jobkit.generators import GeneratorError, generate_job, generate_mailer

RUFF = Path(sys.executable).with_name("ruff")
PYTEST = Path(sys.executable).with_name("pytest")  # the console script: no cwd on sys.path
RUFF_CONFIG = """[tool.ruff]
line-length = 100
target-version = "py311"

[tool.ruff.lint]
select = ["E", "F", "W", "I", "B", "UP", "SIM"]
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty project folder, the current directory (as for `jobkit generate`)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("JOBKIT_CONFIG", raising=False)  # config/jobkit.yml of the project
    return tmp_path


def generate(*args: str) -> Result:
    return CliRunner().invoke(main, ["generate", *args])


def files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_generated_code_passes_ruff_and_its_tests_which_can_fail(project: Path) -> None:
    for args in (["job", "welcome"], ["job", "Broken", "--dir", "app/jobs", "--queue", "low"],
                 ["mailer", "UserMailer", "welcome", "password_reset"]):
        result = generate(*args)
        assert result.exit_code == 0, result.output
    assert "    create  mailers/templates/user_mailer/welcome.html.j2" in result.output
    assert files(project) == [
        "app/jobs/__init__.py", "app/jobs/broken_job.py", "conftest.py", "jobs/__init__.py",
        "jobs/welcome_job.py", "mailers/__init__.py", "mailers/application_mailer.py",
        "mailers/previews/__init__.py", "mailers/previews/user_mailer_preview.py",
        "mailers/templates/layouts/mailer.html.j2", "mailers/templates/layouts/mailer.txt.j2",
        "mailers/templates/user_mailer/password_reset.html.j2",
        "mailers/templates/user_mailer/password_reset.txt.j2",
        "mailers/templates/user_mailer/welcome.html.j2",
        "mailers/templates/user_mailer/welcome.txt.j2", "mailers/user_mailer.py",
        "tests/test_broken_job.py", "tests/test_user_mailer.py", "tests/test_welcome_job.py"]
    for config in (["--isolated"], []):  # ruff's default rules, then jobkit's own
        (project / "pyproject.toml").write_text(RUFF_CONFIG if config == [] else "")
        lint = subprocess.run([str(RUFF), "check", "--no-cache", *config, "."], cwd=project,
                              capture_output=True, text=True, timeout=60)
        assert lint.returncode == 0, lint.stdout + lint.stderr

    # Break one job and one template: exactly their tests must fail.
    broken = project / "app/jobs/broken_job.py"
    broken.write_text(broken.read_text().replace("        pass\n",
                                                 "        raise RuntimeError('boom')\n"))
    (project / "mailers/templates/user_mailer/password_reset.html.j2").write_text("<p>Bye</p>")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("JOBKIT_", "PYTEST_", "REDIS_URL", "SMTP_URL"))}
    run = subprocess.run([str(PYTEST), "-q", "-p", "no:cacheprovider", "tests"],
                         cwd=project, env=env,
                         capture_output=True, text=True, timeout=120)
    failed = sorted(line.split()[1] for line in run.stdout.splitlines()
                    if line.startswith("FAILED"))
    assert failed == ["tests/test_broken_job.py::test_broken_job_performs",
                      "tests/test_user_mailer.py::test_password_reset"], run.stdout[-3000:]
    assert "2 failed, 6 passed" in run.stdout, run.stdout[-3000:]
    assert "RuntimeError: boom" in run.stdout


@pytest.mark.parametrize("name", ["welcome", "Welcome", "WelcomeJob", "welcome_job",
                                  "welcome-job"])
def test_job_names_normalize_as_rails(tmp_path: Path, name: str) -> None:
    written = generate_job(name, root=tmp_path)
    assert [(str(w.path), w.status) for w in written] == [
        ("jobs/__init__.py", "create"), ("jobs/welcome_job.py", "create"),
        ("tests/test_welcome_job.py", "create"), ("conftest.py", "create")]
    assert "class WelcomeJob(Job):" in (tmp_path / "jobs/welcome_job.py").read_text()


@pytest.mark.parametrize(("name", "module", "class_name"), [
    ("user", "user_mailer", "UserMailer"), ("User", "user_mailer", "UserMailer"),
    ("UserMailer", "user_mailer", "UserMailer"), ("user_mailer", "user_mailer", "UserMailer"),
    ("HTMLReport", "html_report_mailer", "HtmlReportMailer"),
])
def test_mailer_names_normalize_as_rails(tmp_path: Path, name: str, module: str,
                                         class_name: str) -> None:
    generate_mailer(name, ["daily"], root=tmp_path)
    assert f"class {class_name}(ApplicationMailer):" in (
        tmp_path / f"mailers/{module}.py").read_text()
    assert (tmp_path / f"mailers/templates/{module}/daily.txt.j2").exists()
    assert f"class {class_name}Preview(Preview):" in (
        tmp_path / f"mailers/previews/{module}_preview.py").read_text()


@pytest.mark.parametrize(("args", "message"), [
    (["job", "1st"], "job name '1st' is not valid: use letters, digits, _ and -"),
    (["job", "wel come"], "job name 'wel come' is not valid"),
    (["job", "admin/welcome"], "job name 'admin/welcome' is not valid"),
    (["job", "welcome_"], "job name 'welcome_' is not valid ('welcome_')"),
    (["job", "welcome", "--dir", "/srv/jobs"], "--dir '/srv/jobs' is not an importable "
                                               "package folder"),
    (["job", "welcome", "--dir", "my-jobs"], "--dir 'my-jobs' is not an importable"),
    (["job", "welcome", "--queue", "a b"], "--queue 'a b' is not a queue name"),
    (["mailer", "user"], "Missing argument 'ACTION...'"),
    (["mailer", "user", "Welcome"], "action 'Welcome' is not valid: a method name in "
                                    "snake_case"),
    (["mailer", "user", "class"], "action 'class' is not valid"),
    (["mailer", "user", "mail"], "action 'mail' would hide Mailer.mail"),
    (["mailer", "user", "welcome", "welcome"], "action 'welcome' is given twice"),
    (["mailer", "ApplicationMailer", "welcome"], "ApplicationMailer is the mailers' shared"),
    (["mailer", "user", "welcome", "--tests-dir", "../t"], "--tests-dir '../t' is not"),
    (["job", "a" * 245], f"job name {'a' * 20!r}... is too long (245 characters): at most 100"),
    (["mailer", "b" * 101, "welcome"], "mailer name 'bbbbbbbbbbbbbbbbbbbb'... is too long"),
    (["mailer", "user", "welcome", "c" * 101], "action 'cccccccccccccccccccc'... is too long"),
    (["job", "welcome", "--dir", "d" * 256], "the name 'dddddddddddddddddddd'... is too long "
                                             "for a file system"),
    (["job", "Test"], "job name 'Test' would make test_job.py, a file pytest collects"),
    (["mailer", "test_users", "welcome"], "would make test_users_mailer.py"),
])
def test_bad_input_is_refused_and_writes_nothing(project: Path, args: list[str],
                                                 message: str) -> None:
    result = generate(*args)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output
    assert files(project) == []


@pytest.mark.parametrize(("in_the_way", "message"), [
    ("tests/test_welcome_job.py/", "tests/test_welcome_job.py is a folder, not a file"),
    ("tests", "tests is a file, not a folder: cannot write tests/test_welcome_job.py"),
])
def test_a_path_in_the_way_is_refused_before_anything_is_written(project: Path,
                                                                in_the_way: str,
                                                                message: str) -> None:
    path = project / in_the_way
    path.parent.mkdir(parents=True, exist_ok=True)
    path.mkdir() if in_the_way.endswith("/") else path.write_text("")
    before = sorted(project.rglob("*"))
    result = generate("job", "welcome")
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert sorted(project.rglob("*")) == before


def test_existing_files_are_skipped_unless_forced_and_shared_ones_kept(project: Path) -> None:
    assert generate("mailer", "user", "welcome").exit_code == 0
    mailer, base = project / "mailers/user_mailer.py", project / "mailers/application_mailer.py"
    mailer.write_text("# mine\n")
    base.write_text("# my base\n")
    result = generate("mailer", "user", "welcome")
    assert "      skip  mailers/user_mailer.py  (exists: --force to overwrite)" in result.output
    assert "     exist  mailers/application_mailer.py  (exists: kept)" in result.output
    assert " identical  mailers/templates/user_mailer/welcome.txt.j2" in result.output
    assert mailer.read_text() == "# mine\n"
    result = generate("mailer", "user", "welcome", "--force")
    assert "     force  mailers/user_mailer.py" in result.output
    assert "class UserMailer(ApplicationMailer):" in mailer.read_text()
    assert base.read_text() == "# my base\n"  # shared: never overwritten
    mailer.write_bytes(b"# caf\xe9 (latin-1)\n")  # not UTF-8: compared as bytes, kept
    result = generate("mailer", "user", "welcome")
    assert "      skip  mailers/user_mailer.py" in result.output, result.output
    assert mailer.read_bytes() == b"# caf\xe9 (latin-1)\n"


def test_generator_error_is_a_value_error_naming_the_input(tmp_path: Path) -> None:
    with pytest.raises(GeneratorError, match="give the mailer at least one action"):
        generate_mailer("user", [], root=tmp_path)
    assert isinstance(GeneratorError("x"), ValueError)


def test_jobs_go_where_the_require_setting_says(project: Path) -> None:
    (project / "config").mkdir()
    (project / "config/jobkit.yml").write_text("require: [app.tasks, app.jobs]\n")
    (project / "app/jobs").mkdir(parents=True)
    (project / "app/jobs/__init__.py").write_text("")
    (project / "app/tasks.py").write_text("")  # a module, not a package: not a folder for jobs
    result = generate("job", "welcome")
    assert result.exit_code == 0, result.output
    assert "    create  app/jobs/welcome_job.py" in result.output
    assert "from app.jobs.welcome_job import WelcomeJob" in (
        project / "tests/test_welcome_job.py").read_text()
    (project / "config/jobkit.yml").write_text("require: [app.jobz]\n")
    assert "    create  jobs/welcome_job.py" in generate("job", "welcome").output
    (project / "config/jobkit.yml").write_text("concurrency: lots\n")
    result = generate("job", "other")
    assert result.exit_code == 1 and "concurrency" in result.output
    assert not (project / "jobs/other_job.py").exists()
