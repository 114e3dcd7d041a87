"""The sidekiq.yml-shaped loader and `jobkit config check`."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from jobkit import ConfigError
from jobkit.cli import main, mask_url
from jobkit.config import DEFAULT_QUEUES, Settings, load_settings
from jobkit.config_values import parse_queue

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
    assert "redis_url: redis://:***@db:6379/1" in result.output
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
    assert mask_url("rediss://user:pw@h:1/0") == "rediss://user:***@h:1/0"


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


# Sentinel, and secrets in config errors and in `config check`.


@pytest.mark.parametrize("url", [
    "sentinel://localhost:26379",
    "sentinel://h1:26379;sentinel://h2:26380",
    "sentinel://:s3cret@h1:26379;sentinel://:s3cret@h2:26380",
    "sentinel://h1",
])
def test_sentinel_urls_are_accepted_with_a_master(url: str) -> None:
    settings = load_settings(None, environ={"REDIS_URL": url, "REDIS_SENTINEL_MASTER": "mymaster"})
    assert (settings.redis_url, settings.sentinel_master) == (url, "mymaster")


def test_sentinel_master_from_the_file_and_the_variable(tmp_path: Path) -> None:
    path = write(tmp_path, "redis_url: sentinel://h1:26379;sentinel://h2:26379\n"
                           "sentinel_master: filemaster\n")
    assert load_settings(path, environ={}).sentinel_master == "filemaster"
    assert load_settings(path, environ={"REDIS_SENTINEL_MASTER": "envmaster"}).sentinel_master \
        == "envmaster"
    assert load_settings(path, environ={"REDIS_SENTINEL_MASTER": ""}).sentinel_master \
        == "filemaster"  # empty counts as unset, as for REDIS_URL
    assert load_settings(None, environ={}).sentinel_master is None


def test_a_sentinel_url_without_a_master_names_both_settings_and_masks_the_url() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(None, environ={"REDIS_URL": "sentinel://:hunter2@h1:26379;sentinel://h2"})
    message = str(caught.value)
    assert "redis_url" in message and "sentinel_master" in message
    assert "REDIS_SENTINEL_MASTER" in message
    assert "hunter2" not in message and "sentinel://:***@h1:26379" in message


@pytest.mark.parametrize("url", [
    "sentinel://", "sentinel://h1:notaport", "sentinel://h1;redis://h2",
    "sentinel://h1:26379;", "redis://a:1;redis://b:2", "localhost:6379",
])
def test_malformed_sentinel_and_multi_urls_are_refused(url: str) -> None:
    with pytest.raises(ConfigError, match="is not valid: expected a redis://, rediss://, unix:// "
                                          "or sentinel:// URL"):
        load_settings(None, environ={"REDIS_URL": url, "REDIS_SENTINEL_MASTER": "m"})


def test_sentinel_master_must_be_a_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="sentinel_master: 5 is not valid"):
        load_settings(write(tmp_path, "sentinel_master: 5\n"), environ={})
    with pytest.raises(ConfigError, match="sentinel_master: '' is not valid"):
        load_settings(None, environ={}, sentinel_master="")


@pytest.mark.parametrize("url", [
    "redis//:hunter2@db:6379/0",           # the colon of the scheme forgotten
    "redis:/:hunter2@db:6379/0",
    "http://:hunter2@db:6379/0",           # another scheme
    "redis://:hunter2",                    # no host
    "db:6379?password=hunter2",
    "sentinel://:hunter2@h1:x;sentinel://h2",
])
def test_a_mistyped_url_is_shown_masked_in_errors(tmp_path: Path, url: str) -> None:
    with pytest.raises(ConfigError) as from_variable:
        load_settings(None, environ={"REDIS_URL": url})
    with pytest.raises(ConfigError) as from_file:
        load_settings(write(tmp_path, f"redis_url: '{url}'\n"), environ={})
    with pytest.raises(ConfigError) as from_configure:
        load_settings(None, environ={}, redis_url=url)
    for caught in (from_variable, from_file, from_configure):
        assert "hunter2" not in str(caught.value) and "***" in str(caught.value)
    result = CliRunner().invoke(main, ["config", "check"], env={"REDIS_URL": url,
                                                                 "JOBKIT_CONFIG": ""})
    assert result.exit_code == 1 and "hunter2" not in result.output


def test_a_bad_mailer_mapping_is_shown_with_the_smtp_password_masked(tmp_path: Path) -> None:
    path = write(tmp_path, "mailer: {smtp_url: 'smtp://u:hunter2@mail:99999'}\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    assert "hunter2" not in str(caught.value) and "smtp://u:***@mail:99999" in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        load_settings(None, environ={}, mailer=["smtp://u:hunter2@mail:25"])
    assert "hunter2" not in str(caught.value) and "smtp://u:***@mail:25" in str(caught.value)


@pytest.mark.parametrize("url, shown", [
    ("redis://db:6379/0?password=hunter2", "redis://db:6379/0?password=***"),
    ("redis://user:hunter2@db:6379/0", "redis://user:***@db:6379/0"),
    ("rediss://:hunter2@db:6380/0?ssl_cert_reqs=none", "rediss://:***@db:6380/0?ssl_cert_reqs=none"),
    ("unix://:hunter2@/tmp/redis.sock?db=2", "unix://:***@/tmp/redis.sock?db=2"),
    ("sentinel://:hunter2@h1:26379;sentinel://:hunter2@h2:26379",
     "sentinel://:***@h1:26379;sentinel://:***@h2:26379"),
])
def test_config_check_masks_every_password_shape(url: str, shown: str) -> None:
    env = {"REDIS_URL": url, "REDIS_SENTINEL_MASTER": "mymaster", "JOBKIT_CONFIG": "",
           "SMTP_URL": ""}
    result = CliRunner().invoke(main, ["config", "check"], env=env)
    assert result.exit_code == 0, result.output
    assert f"redis_url: {shown}\n" in result.output
    assert "hunter2" not in result.output
    assert ("sentinel_master: mymaster" in result.output)


def test_settings_repr_masks_passwords() -> None:
    settings = load_settings(None, environ={"REDIS_URL": "redis://:hunter2@db:6379/0"},
                             mailer={"smtp_url": "smtp://u:hunter2@mail:25"})
    assert "hunter2" not in repr(settings) and "redis://:***@db:6379/0" in repr(settings)


# What delivery, the poller or the heartbeat would choke on, refused when the settings load.

NUMBER_KEYS = ["concurrency", "max_retries", "wait_for_replicas", "dead_max_jobs", "timeout",
               "poll_interval", "heartbeat_timeout", "dead_timeout"]
NOT_NUMBERS = [".inf", "-.inf", ".nan", "1.0e400", "true", "'10s'", "'inf'", "99999999999999",
               "[1]"]


@pytest.mark.parametrize("key", NUMBER_KEYS)
@pytest.mark.parametrize("value", NOT_NUMBERS)
def test_numbers_are_finite_in_range_and_never_a_bool(tmp_path: Path, key: str,
                                                      value: str) -> None:
    path = write(tmp_path, f"concurrency: 2\n{key}: {value}\n")
    with pytest.raises(ConfigError, match=rf"jobkit.yml:2: {key}: .* is not valid: expected "
                                          r"(a whole number|seconds) >=? \d \(at most \d+\)"):
        load_settings(path, environ={})


@pytest.mark.parametrize("section, key", [("mailer", "timeout"), ("web", "stuck_after")])
@pytest.mark.parametrize("value", [".inf", ".nan", "0", "-1", "true", "'10s'"])
def test_seconds_inside_sections_are_checked_with_their_line(tmp_path: Path, section: str,
                                                             key: str, value: str) -> None:
    path = write(tmp_path, f"{section}:\n  {key}: 5\nproduction:\n  {section}:\n"
                           f"    {key}: {value}\n")
    load_settings(path, environ={})  # development: the top-level 5
    with pytest.raises(ConfigError, match=rf"jobkit.yml:5: production.{section}.{key}: .* is "
                                          r"not valid: expected seconds > 0"):
        load_settings(path, "production", environ={})


def test_numbers_from_variables_and_configure_name_where_they_came_from() -> None:
    for variable in ("JOBKIT_POLL_INTERVAL", "JOBKIT_HEARTBEAT_TIMEOUT",
                     "JOBKIT_WAIT_FOR_REPLICAS"):
        for text in ("inf", "nan", "1e999", "10s", "true", "-1"):
            with pytest.raises(ConfigError, match=f"^{variable}: '{text}' is not valid"):
                load_settings(None, environ={variable: text})
    for key, value in (("timeout", True), ("poll_interval", float("inf")),
                       ("concurrency", 2.0), ("dead_timeout", float("nan"))):
        with pytest.raises(ConfigError, match=f"^{key}: {value!r} is not valid"):
            load_settings(None, environ={}, **{key: value})


def test_numbers_as_text_and_at_the_bounds_are_read(tmp_path: Path) -> None:
    path = write(tmp_path, "concurrency: ${N}\ntimeout: '0'\npoll_interval: 1e-1\n"
                           "dead_timeout: 1000000000\ndead_max_jobs: 2147483647\n"
                           "mailer: {timeout: '${MAIL_TIMEOUT:-2.5}'}\n")
    s = load_settings(path, environ={"N": " 3", "JOBKIT_HEARTBEAT_TIMEOUT": "1.5",
                                     "JOBKIT_WAIT_FOR_REPLICAS": "2"})
    assert (s.concurrency, s.timeout, s.poll_interval, s.heartbeat_timeout) == (3, 0, 0.1, 1.5)
    assert (s.dead_timeout, s.dead_max_jobs, s.wait_for_replicas) == (10**9, 2**31 - 1, 2)
    assert s.mailer == {"timeout": 2.5}
    for text in ("dead_timeout: 1000000001\n", "dead_max_jobs: 2147483648\n"):
        with pytest.raises(ConfigError, match="is not valid"):
            load_settings(write(tmp_path, text), environ={})


@pytest.mark.parametrize("url", [
    "smtp://mail.example:99999", "smtp://mail.example:abc", "smtp://mail.example:0",
    "smtp://", "smtp://:hunter2@", "smtp:mail.example", "http://mail.example",
    "mail.example:25", "smtp://[::1:25", "file:///tmp/mails",
])
def test_a_malformed_smtp_url_is_refused_naming_the_key(tmp_path: Path, url: str) -> None:
    path = write(tmp_path, f"mailer:\n  delivery_method: test\n  smtp_url: '{url}'\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    assert f"{tmp_path / 'jobkit.yml'}:3: mailer.smtp_url: " in str(caught.value)
    assert "expected an smtp://, smtp+starttls:// or smtps:// URL" in str(caught.value)
    assert "hunter2" not in str(caught.value)
    with pytest.raises(ConfigError, match="^SMTP_URL: .* is not valid"):
        load_settings(None, environ={"SMTP_URL": url})
    with pytest.raises(ConfigError, match="^mailer.smtp_url: .* is not valid"):
        load_settings(None, environ={}, mailer={"smtp_url": url})


@pytest.mark.parametrize("url", ["smtp://mail.example", "smtp+starttls://u:p%40ss@mail:587",
                                 "smtps://mail.example:465", "smtp://[::1]:1025"])
def test_smtp_urls_the_mailer_takes_are_accepted(url: str) -> None:
    settings = load_settings(None, environ={"SMTP_URL": url}, mailer={"smtp_url": url})
    assert settings.mailer == {"smtp_url": url}


def test_mailer_keys_are_checked_one_by_one_with_their_line(tmp_path: Path) -> None:
    path = write(tmp_path, "mailer:\n  delivery_method: smtp\n  smpt_url: smtp://h\n")
    with pytest.raises(ConfigError, match=r"jobkit.yml:3: mailer.smpt_url: unknown key \(did "
                                          r"you mean 'smtp_url'\?\)"):
        load_settings(path, environ={})
    for text, message in (("file_dir: 5", "mailer.file_dir: 5 is not valid"),
                          ("previews: [1]", "mailer.previews: [1] is not valid"),
                          ("delivery_method: pigeon", "mailer.delivery_method: 'pigeon'")):
        with pytest.raises(ConfigError, match=f"jobkit.yml:2: {re.escape(message)}"):
            load_settings(write(tmp_path, f"mailer:\n  {text}\n"), environ={})


def test_a_file_that_is_not_utf8_names_the_line_and_byte(tmp_path: Path) -> None:
    path = tmp_path / "jobkit.yml"
    path.write_bytes(b"concurrency: 2\n# caf\xe9 (Latin-1)\nqueues: [a]\n")
    with pytest.raises(ConfigError, match=r"jobkit.yml:2: not UTF-8 \(byte 20 is 0xe9\)"):
        load_settings(path, environ={})
    path.write_bytes(b"\xff\xfec\x00o\x00")  # UTF-16
    with pytest.raises(ConfigError, match="jobkit.yml:1: not UTF-8"):
        load_settings(path, environ={})
    path.write_bytes("\ufeffconcurrency: 3\n".encode())  # a UTF-8 byte order mark is fine
    assert load_settings(path, environ={}).concurrency == 3
    path.write_bytes(b"concurrency: 2\nqueues: [a\x00]\n")
    with pytest.raises(ConfigError, match="jobkit.yml:2: not valid YAML: character #x0000"):
        load_settings(path, environ={})


def test_absurdly_deep_yaml_is_refused_not_a_recursion_error(tmp_path: Path) -> None:
    started = time.monotonic()
    for text in ("concurrency: 2\nqueues: " + "[" * 10_000 + "]" * 10_000 + "\n",
                 "queues: " + "{a: " * 100_000 + "\n",
                 "queues:\n" + "".join("  " * i + "-\n" for i in range(1, 200))):
        with pytest.raises(ConfigError, match=r"jobkit.yml:\d+: queues(\.a\.a\.\.\.)?: nested "
                                              "more than 32 levels deep"):
            load_settings(write(tmp_path, text), environ={})
    chain = "".join(f"a{i}: &a{i} [[[[[[[[*a{i - 1}]]]]]]]]\n" for i in range(1, 200))
    with pytest.raises(ConfigError, match="nested more than 32 levels deep"):
        load_settings(write(tmp_path, "a0: &a0 x\n" + chain), environ={})  # deep via aliases
    assert time.monotonic() - started < 10


def test_a_yaml_bomb_or_a_recursive_alias_is_refused_quickly(tmp_path: Path) -> None:
    laughs = ['lol: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    laughs += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 9)]
    started = time.monotonic()
    with pytest.raises(ConfigError, match=r"jobkit.yml:5: l4: more than 10000 values once "
                                          "aliases are expanded"):
        load_settings(write(tmp_path, "\n".join(laughs) + "\n"), environ={})
    assert time.monotonic() - started < 5
    with pytest.raises(ConfigError, match=r"jobkit.yml:1: queues: alias \*q is inside the "
                                          "node &q it repeats"):
        load_settings(write(tmp_path, "queues: &q [a, *q]\n"), environ={})


def test_anchors_and_aliases_of_a_real_file_still_work(tmp_path: Path) -> None:
    path = write(tmp_path, "mailer: &mail\n  delivery_method: test\n  timeout: 3\n"
                           "queues: &queues [a, [b, 2]]\nproduction:\n  queues: *queues\n"
                           "  mailer:\n    <<: *mail\n    timeout: 4\n")
    s = load_settings(path, "production", environ={})
    assert s.queues == (("a", 1), ("b", 2))
    assert s.mailer == {"delivery_method": "test", "timeout": 4}


@pytest.mark.parametrize("weight", ["1.5", "true", ".inf", "-1", "0", "'2.0'", "''", "null",
                                    "2147483648", "[2]"])
def test_a_weight_is_a_plain_whole_number(tmp_path: Path, weight: str) -> None:
    path = write(tmp_path, f"queues:\n  - default\n  - [mailers, {weight}]\n")
    with pytest.raises(ConfigError, match=r"jobkit.yml:1: queues\[1\]: weight of queue "
                                          r"'mailers' must be a whole number >= 1 \(at most "
                                          r"2147483647\), not "):
        load_settings(path, environ={})


def test_weights_as_digits_are_read_like_other_whole_numbers(tmp_path: Path) -> None:
    path = write(tmp_path, "queues:\n  - [a, '${A_WEIGHT:-3}']\n  - 'b, 2'\n  - [c, 1]\n")
    assert load_settings(path, environ={}).queues == (("a", 3), ("b", 2), ("c", 1))
    for spec in ("a,1.5", "a,.inf", "a,-1", "a,0", "a,true"):
        with pytest.raises(ConfigError, match="^-q: weight of queue 'a' must be"):
            parse_queue(spec, "-q")


def test_an_unknown_environment_names_the_variable_it_came_from() -> None:
    with pytest.raises(ConfigError, match="^APP_ENV: unknown environment 'qa'"):
        load_settings(None, environ={"APP_ENV": "qa"})
    with pytest.raises(ConfigError, match=r"^JOBKIT_ENV: unknown environment 'produciton' \(did "
                                          "you mean 'production'"):
        load_settings(None, environ={"APP_ENV": "staging", "JOBKIT_ENV": "produciton"})
    with pytest.raises(ConfigError, match="^unknown environment 'qa'"):
        load_settings(None, "qa", environ={})


BAD_FILES = {
    "inf.yml": (b"poll_interval: .inf\n", "inf.yml:1: poll_interval: inf is not valid"),
    "smtp.yml": (b"mailer:\n  smtp_url: smtp://h:99999\n", "smtp.yml:2: mailer.smtp_url: "),
    "latin1.yml": (b"# \xe9\n", "latin1.yml:1: not UTF-8"),
    "deep.yml": (b"queues: " + b"[" * 10_000, "deep.yml:1: queues: nested more than"),
    "weight.yml": (b"queues: [[a, 1.5]]\n", "weight.yml:1: queues[0]: weight of queue 'a'"),
}


@pytest.mark.parametrize("name", BAD_FILES)
def test_config_check_and_the_worker_print_the_same_line(tmp_path: Path, name: str) -> None:
    content, message = BAD_FILES[name]
    path = tmp_path / name
    path.write_bytes(content)
    env = {"JOBKIT_POLL_INTERVAL": "", "SMTP_URL": "", "JOBKIT_CONFIG": ""}
    check = subprocess.run([sys.executable, "-m", "jobkit", "config", "check", "-C", str(path)],
                           capture_output=True, text=True, env={**os.environ, **env}, timeout=60)
    assert check.returncode == 1
    assert check.stderr.startswith(f"error: {tmp_path}/{message}"), check.stderr
    assert "Traceback" not in check.stderr + check.stdout
    worker = CliRunner().invoke(main, ["worker", "-C", str(path)], env=env)
    assert worker.exit_code == 1
    assert f"Error: {tmp_path}/{message}" in worker.output


# -- a copied sidekiq.yml: ERB and Sidekiq's own keys -------------------------------------------

@pytest.mark.parametrize(("erb", "environ", "expected"), [
    ("<%= ENV['SK_CONCURRENCY'] %>", {"SK_CONCURRENCY": "7"}, 7),
    ('<%= ENV["SK_CONCURRENCY"] %>', {"SK_CONCURRENCY": "7"}, 7),
    ("<%= ENV.fetch('SK_CONCURRENCY') %>", {"SK_CONCURRENCY": "7"}, 7),
    ('<%= ENV.fetch("SK_CONCURRENCY", 10).to_i %>', {}, 10),
    ('<%= ENV.fetch("SK_CONCURRENCY", 10).to_i %>', {"SK_CONCURRENCY": "3"}, 3),
    ("<%= ENV.fetch('SK_CONCURRENCY') { 12 } %>", {}, 12),
    ("<%= ENV.fetch('SK_CONCURRENCY', '4') %>", {}, 4),
    ("<%= Integer(ENV.fetch('SK_CONCURRENCY', 2)) %>", {}, None),
])
def test_erb_that_reads_the_environment_is_read_as_interpolation(
        tmp_path: Path, erb: str, environ: dict, expected: int | None) -> None:
    path = write(tmp_path, f":concurrency: {erb}\n")
    if expected is None:
        with pytest.raises(ConfigError, match=r"jobkit.yml:1: ERB .* is not understood: jobkit "
                           r"does not run Ruby.*\$\{X:-default\}"):
            load_settings(path, environ=environ)
    else:
        assert load_settings(path, environ=environ).concurrency == expected


def test_erb_as_a_queue_name_reads_the_variable_or_names_it(tmp_path: Path) -> None:
    path = write(tmp_path, ":queues:\n  - default\n  - <%= ENV['SK_QUEUE'] %>\n")
    assert load_settings(path, environ={"SK_QUEUE": "reports"}).queue_names == [
        "default", "reports"]
    with pytest.raises(ConfigError, match=r"jobkit.yml:1: queues: environment variable "
                                          r"SK_QUEUE is not set"):
        load_settings(path, environ={})


def test_erb_statements_are_refused_with_their_line_and_comments_ignored(
        tmp_path: Path) -> None:
    path = write(tmp_path, "<%# copied from sidekiq %>\n:concurrency: 2\n")
    assert load_settings(path, environ={}).concurrency == 2
    path = write(tmp_path, ":concurrency: 2\n<% workers = 5 %>\n:timeout: 8\n")
    with pytest.raises(ConfigError, match=r"jobkit.yml:2: ERB '<% workers = 5 %>' is not "
                                          "understood"):
        load_settings(path, environ={})


def test_sidekiq_only_keys_are_noted_not_refused(tmp_path: Path) -> None:
    path = write(tmp_path, ":verbose: false\n:pidfile: tmp/sidekiq.pid\n:concurrency: 2\n"
                           "production:\n  :logfile: log/sidekiq.log\n")
    settings = load_settings(path, environ={})
    assert settings.concurrency == 2
    assert [note.split(", ignored")[0] for note in settings.notes] == [
        f"{path}:1: verbose: Sidekiq's setting", f"{path}:2: pidfile: Sidekiq's setting",
        f"{path}:5: production.logfile: Sidekiq's setting"]
    result = CliRunner().invoke(main, ["config", "check", "-C", str(path)])
    assert f"# note: {path}:1: verbose: Sidekiq's setting, ignored here: the worker's log " \
           "level is its -l option" in result.output
    with pytest.raises(ConfigError, match=r"verbos: unknown key \(did you mean 'verbose'\?\)"):
        load_settings(write(tmp_path, ":verbos: true\n"), environ={})


def test_a_sidekiq_sized_concurrency_under_prefork_gets_a_note() -> None:
    from jobkit.config import machine_notes

    [note] = machine_notes(Settings(concurrency=25), cores=2)
    assert note.startswith("concurrency 25 starts 25 processes (pool prefork) on 2 core(s)")
    assert "use pool: threads" in note
    assert machine_notes(Settings(concurrency=8), cores=2) == []
    assert machine_notes(Settings(concurrency=25, pool="threads"), cores=2) == []
