"""The sidekiq.yml-shaped loader and `jobkit config check`."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from jobkit import ConfigError
from jobkit.cli import main, mask_url
from jobkit.config import DEFAULT_QUEUES, Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "jobkit.yml"
    path.write_text(text)
    return path


def test_defaults_without_a_file() -> None:
    settings = load_settings(None, environ={})
    assert settings == Settings()
    assert settings.queue_names == list(DEFAULT_QUEUES)
    assert (settings.concurrency, settings.timeout, settings.max_retries) == (5, 25.0, 25)
    assert settings.environment == "development"


def test_every_key(tmp_path: Path) -> None:
    path = write(tmp_path, """
redis_url: redis://cache:6380/3
adapter: async
concurrency: 12
queues: [critical, default, low]
queue_order: strict
pool: threads
timeout: 8.5
max_retries: 3
poll_interval: 0.5
require: [app.jobs, app.mailers]
mailer: {delivery_method: test}
web: {stuck_after: 120}
""")
    s = load_settings(path, environ={})
    assert s.redis_url == "redis://cache:6380/3"
    assert s.adapter == "async"
    assert s.concurrency == 12
    assert s.queues == (("critical", 1), ("default", 1), ("low", 1))
    assert (s.queue_order, s.pool, s.timeout, s.max_retries) == ("strict", "threads", 8.5, 3)
    assert s.poll_interval == 0.5
    assert s.require == ("app.jobs", "app.mailers")
    assert s.mailer == {"delivery_method": "test"} and s.web == {"stuck_after": 120}


def test_sidekiq_yml_copied_as_is(tmp_path: Path) -> None:
    path = write(tmp_path, """
:concurrency: 7
:queues:
  - [critical, 3]
  - [default, 1]
production:
  :concurrency: 20
""")
    dev = load_settings(path, environ={})
    assert dev.concurrency == 7
    assert dev.queues == (("critical", 3), ("default", 1))
    assert dev.queue_order == "weighted"
    assert load_settings(path, "production", environ={}).concurrency == 20


def test_environment_is_chosen_by_argument_then_variables(tmp_path: Path) -> None:
    path = write(tmp_path, "concurrency: 1\nstaging: {concurrency: 2}\nproduction: "
                           "{concurrency: 3}\n")
    assert load_settings(path, environ={}).concurrency == 1
    assert load_settings(path, environ={"APP_ENV": "staging"}).concurrency == 2
    assert load_settings(path, environ={"APP_ENV": "staging", "JOBKIT_ENV": "production"}
                         ).concurrency == 3
    assert load_settings(path, "staging", environ={"JOBKIT_ENV": "production"}).concurrency == 2


def test_interpolation_and_environment_overrides(tmp_path: Path) -> None:
    path = write(tmp_path, "redis_url: ${CACHE_URL:-redis://fallback/0}\n"
                           "concurrency: ${WORKERS}\ntimeout: ${GRACE:-4}\n")
    s = load_settings(path, environ={"WORKERS": "9"})
    assert (s.redis_url, s.concurrency, s.timeout) == ("redis://fallback/0", 9, 4.0)
    s = load_settings(path, environ={"WORKERS": "9", "REDIS_URL": "redis://env/1",
                                     "JOBKIT_ADAPTER": "inline", "JOBKIT_POLL_INTERVAL": "0.3"})
    assert (s.redis_url, s.adapter, s.poll_interval) == ("redis://env/1", "inline", 0.3)


@pytest.mark.parametrize("text, message", [
    ("concurency: 5\n", "jobkit.yml:1: concurency: unknown key (did you mean 'concurrency'?)"),
    ("timeout: 3\nproduction:\n  quues: [a]\n",
     "jobkit.yml:3: production.quues: unknown key (did you mean 'queues'?)"),
    ("concurrency: -2\n", "jobkit.yml:1: concurrency: -2 is not valid: expected a whole "
                          "number >= 1"),
    ("concurrency: lots\n", "concurrency: 'lots' is not valid"),
    ("queues:\n  - [default, 0]\n", "jobkit.yml:1: queues[0]: weight of queue 'default' must "
                                    "be a whole number >= 1"),
    ("queues: []\n", "queues: must be a non-empty list"),
    ("queue_order: fifo\n", "queue_order: 'fifo' is not valid: expected one of strict, "
                            "weighted"),
    ("pool: gevent\n", "pool: 'gevent' is not valid"),
    ("redis_url: localhost\n", "redis_url: 'localhost' is not valid"),
    ("concurrency: ${UNSET_VAR}\n", "concurrency: environment variable UNSET_VAR is not set"),
    ("queues: [a,\n", "jobkit.yml:2: not valid YAML"),
    ("x: !!python/object/apply:os.system ['true']\n", "could not determine a constructor"),
    ("- just\n- a list\n", "the top level must be a mapping"),
    ("production: 5\n", "jobkit.yml:1: production: must be a mapping of settings"),
])
def test_bad_files_name_file_line_and_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, text), environ={})
    assert message in str(info.value)
    assert str(tmp_path / "jobkit.yml") in str(info.value)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nope.yml: cannot read"):
        load_settings(tmp_path / "nope.yml", environ={})


def test_shipped_config_is_valid_in_every_environment() -> None:
    for env in ("development", "test", "staging", "production"):
        settings = load_settings(ROOT / "config" / "jobkit.yml", env, environ={})
        assert settings.queue_names == list(DEFAULT_QUEUES)


def test_config_check_prints_resolved_settings_with_secrets_masked(tmp_path: Path) -> None:
    path = write(tmp_path, "redis_url: redis://:hunter2@db:6379/1\nqueues: [[a, 2], b]\n")
    result = CliRunner().invoke(main, ["config", "check", "-C", str(path)], env={"REDIS_URL": ""})
    assert result.exit_code == 0, result.output
    assert "redis_url: redis://:****@db:6379/1" in result.output
    assert "hunter2" not in result.output
    assert "queues: a,2, b" in result.output and "queue_order: weighted" in result.output


def test_config_check_fails_with_the_error(tmp_path: Path) -> None:
    path = write(tmp_path, "concurrency: 0\n")
    result = CliRunner().invoke(main, ["config", "check", "-C", str(path)])
    assert result.exit_code == 1
    assert "concurrency: 0 is not valid" in result.output


def test_worker_refuses_to_start_on_a_bad_file(tmp_path: Path) -> None:
    path = write(tmp_path, "concurency: 2\n")
    result = CliRunner().invoke(main, ["worker", "-C", str(path)])
    assert result.exit_code == 1
    assert "unknown key (did you mean 'concurrency'?)" in result.output


def test_mask_url_keeps_urls_without_passwords() -> None:
    assert mask_url("redis://localhost:6379/0") == "redis://localhost:6379/0"
    assert mask_url("rediss://user:pw@h:1/0") == "rediss://user:****@h:1/0"


def test_unknown_adapter_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="adapter: 'sqs' is not valid: expected one of celery"):
        load_settings(write(tmp_path, "adapter: sqs\n"), environ={})
    with pytest.raises(ConfigError, match="JOBKIT_ADAPTER"):
        load_settings(None, environ={"JOBKIT_ADAPTER": "sqs"})


def test_worker_reports_a_missing_required_module(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["worker", "-r", "app.not_there"])
    assert result.exit_code == 1
    assert "cannot import 'app.not_there' (from -r / require)" in result.output


def test_configure_takes_one_queue_name_as_a_string() -> None:
    assert load_settings(None, environ={}, queues="critical").queues == (("critical", 1),)
