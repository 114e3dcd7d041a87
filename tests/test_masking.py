"""jobkit.masking: no password, token or secret of a URL is ever shown, whatever its shape."""

from __future__ import annotations

import re

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from jobkit.masking import mask_secrets, mask_url


@pytest.mark.parametrize("url, masked", [
    # the usual shapes
    ("redis://localhost:6379/0", "redis://localhost:6379/0"),
    ("redis://:hunter2@db:6379/0", "redis://:***@db:6379/0"),
    ("redis://user:hunter2@db:6379/0", "redis://user:***@db:6379/0"),
    ("rediss://default:hunter2@db.example:6380/1", "rediss://default:***@db.example:6380/1"),
    ("unix://:hunter2@/var/run/redis.sock?db=3", "unix://:***@/var/run/redis.sock?db=3"),
    ("unix:///var/run/redis.sock?password=hunter2", "unix:///var/run/redis.sock?password=***"),
    ("redis://[::1]:6379/0", "redis://[::1]:6379/0"),
    ("redis://:hunter2@[::1]:6379/0", "redis://:***@[::1]:6379/0"),
    ("smtp://mailer:hunter2@mail.example:587", "smtp://mailer:***@mail.example:587"),
    ("https://TOKEN123@git.example/repo", "https://***@git.example/repo"),
    # query parameters
    ("redis://db:6379/0?password=hunter2", "redis://db:6379/0?password=***"),
    ("redis://db/0?pass=hunter2&db=1", "redis://db/0?pass=***&db=1"),
    ("redis://db/0?x=1&secret=hunter2#frag", "redis://db/0?x=1&secret=***#frag"),
    ("redis://db/0?token=hun;ter2", "redis://db/0?token=***"),  # ; may be in the value
    ("redis://db/0?PASSWORD=hunter2", "redis://db/0?PASSWORD=***"),
    ("redis://db/0?sentinel_password=hunter2", "redis://db/0?sentinel_password=***"),
    ("redis://db/0?access_token=hunter2&client_secret=x2",
     "redis://db/0?access_token=***&client_secret=***"),
    # kombu's multi-URL form
    ("sentinel://h1:26379;sentinel://h2:26380", "sentinel://h1:26379;sentinel://h2:26380"),
    ("sentinel://:hunter2@h1:26379;sentinel://:hunter2@h2:26380",
     "sentinel://:***@h1:26379;sentinel://:***@h2:26380"),
    ("sentinel://h1:26379;sentinel://u:hunter2@h2:26380",
     "sentinel://h1:26379;sentinel://u:***@h2:26380"),
    ("sentinel://h1?password=hunter2;sentinel://h2?password=x2",
     "sentinel://h1?password=***;sentinel://h2?password=***"),
    ("sentinel://:hun;ter2@h1:26379;sentinel://h2", "sentinel://:***@h1:26379;sentinel://h2"),
    # malformed: masked all the same
    ("redis//:hunter2@db:6379", "redis//:***@db:6379"),
    ("redis://:hun@ter2@db", "redis://:***@db"),
    ("redis://:hun/ter2@db", "redis://:***@db"),
    ("redis://:hun?ter2@db", "redis://:***@db"),
    ("redis://:hun#ter2@db", "redis://:***@db"),
    ("redis://:hun ter2@db", "redis://:***@db"),
    ("redis://:hunter2", "redis://:***"),
    ("redis://user:hunter2", "redis://user:***"),
    ("redis:hunter2@db", "redis:***@db"),
    (":hunter2@db:6379", ":***@db:6379"),
    ("user:hunter2@db", "user:***@db"),
    ("redis://db:6379/0?password=hun@ter2", "redis://db:***"),  # "@" in a query: mask more
    ("", ""),
    ("localhost", "localhost"),
])
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked


@pytest.mark.parametrize("text, masked", [
    ("Error 111 connecting to redis://:hunter2@db:6379/0. Connection refused.",
     "Error 111 connecting to redis://:***@db:6379/0. Connection refused."),
    ("redis_url: 'redis//:hunter2@db' is not valid", "redis_url: 'redis//:***@db' is not valid"),
    ("two: redis://:a1@x sentinel://:b2@y;sentinel://:c3@z",
     "two: redis://:***@x sentinel://:***@y;sentinel://:***@z"),
    ("kwargs {'password': 'hunter2', 'db': 0}", "kwargs {'password': '***', 'db': 0}"),
    ('{"token": "hunter2"}', '{"token": "***"}'),
    ("AUTH failed: password=hunter2", "AUTH failed: password=***"),
    ("mail to ada@example.com from ops@example.com",
     "mail to ada@example.com from ops@example.com"),  # e-mail addresses are not secrets
    ("url=(redis://u:hunter2@db)", "url=(redis://u:***@db)"),
    ("no secrets here: 12:30, a://b", "no secrets here: 12:30, a://b"),
])
def test_mask_secrets(text: str, masked: str) -> None:
    assert mask_secrets(text) == masked


# Properties: for any password, the password does not survive.

_SCHEMES = st.sampled_from(["redis", "rediss", "unix", "sentinel", "smtp", "amqp", "http"])
_HOSTS = st.from_regex(r"[a-z][a-z0-9.-]{0,20}", fullmatch=True)
_USERS = st.from_regex(r"[A-Za-z0-9_.-]{0,12}", fullmatch=True)
# Anything but white space (mask_secrets reads a URL as one word): @ : / ? # ; % and Unicode
_PASSWORDS = st.text(st.characters(blacklist_categories=("Cs", "Zs", "Zl", "Zp", "Cc")),
                     min_size=1, max_size=40)
_NEXT_URL = re.compile(r";[A-Za-z][A-Za-z0-9+.-]*:/")


def _masked_away(secret: str, shown: str, around: str) -> bool:
    """The secret is not in `shown`, unless it is also part of what legitimately remains."""
    return secret not in shown.replace("***", "\0") or secret in around


@settings(max_examples=400)
@given(scheme=_SCHEMES, user=_USERS, password=_PASSWORDS, host=_HOSTS,
       port=st.integers(1, 65535), db=st.integers(0, 15))
@example(scheme="redis", user="", password="p@ss", host="db", port=6379, db=0)
@example(scheme="redis", user="", password="//x:1@", host="db", port=6379, db=0)
@example(scheme="redis", user="u", password="a?b#c/d", host="db", port=6379, db=0)
def test_userinfo_password_is_masked(scheme: str, user: str, password: str, host: str,
                                     port: int, db: int) -> None:
    assume(not _NEXT_URL.search(password))  # a password holding ";scheme:/" starts a URL
    url = f"{scheme}://{user}:{password}@{host}:{port}/{db}"
    masked = mask_url(url)
    assert masked == f"{scheme}://{user}:***@{host}:{port}/{db}"
    text = mask_secrets(f"Error connecting to '{url}': refused")
    assert _masked_away(password, text, f"Error connecting to '{scheme}://{user}:@{host}:{port}"
                                        f"/{db}': refused")


@settings(max_examples=300)
@given(name=st.sampled_from(["password", "pass", "secret", "token", "sentinel_password",
                             "Password"]),
       value=st.text(st.characters(blacklist_categories=("Cs", "Zs", "Zl", "Zp", "Cc"),
                                   blacklist_characters="&#"), min_size=1, max_size=30),
       host=_HOSTS)
def test_query_secret_is_masked(name: str, value: str, host: str) -> None:
    assume(not _NEXT_URL.search(value))
    url = f"redis://{host}:6379/0?db=1&{name}={value}&x=y"
    masked = mask_url(url)
    around = f"redis://{host}:6379/0?db=1&{name}=&x=y"
    assert _masked_away(value, masked, around), masked
    assert "***" in masked


@settings(max_examples=200)
@given(passwords=st.lists(_PASSWORDS, min_size=1, max_size=4), hosts=st.lists(_HOSTS, min_size=4,
                                                                               max_size=4))
def test_every_sentinel_of_a_list_is_masked(passwords: list[str], hosts: list[str]) -> None:
    for password in passwords:
        assume(not _NEXT_URL.search(password) and not password.startswith(";"))
    url = ";".join(f"sentinel://:{pw}@{host}:26379" for pw, host in zip(passwords, hosts,
                                                                         strict=False))
    masked = mask_url(url)
    assert masked == ";".join(f"sentinel://:***@{host}:26379" for host in hosts[:len(passwords)])


@given(st.text(max_size=200))
def test_never_fails_and_keeps_text_without_secrets(text: str) -> None:
    masked = mask_secrets(text)
    assert isinstance(masked, str) and isinstance(mask_url(text), str)
    if "@" not in text and "=" not in text and "//" not in text and ":" not in text:
        assert masked == text


def test_a_url_without_password_inside_a_repr_keeps_its_port() -> None:
    shown = mask_secrets(str({"smtp_url": "smtp://localhost:25", "timeout": 10}))
    assert shown == "{'smtp_url': 'smtp://localhost:25', 'timeout': 10}"
    assert mask_secrets("'redis://u:secret'") == "'redis://u:***'"
