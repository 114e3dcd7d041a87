"""Removing an empty queue's name from the listing (`jobkit:queues`): the API, the queues page's
Remove button and `jobkit queues remove`; refused while a job waits in any of its lists, and for
a configured queue."""

from __future__ import annotations

import pytest
import redis
from click.testing import CliRunner

from jobkit import api, keys
from jobkit.cli import main
from tests.jobs import TaskLoggerJob
from tests.test_web import Client

QUEUE = "reports"  # not in the queues setting


def listed() -> list[str]:
    return [queue.name for queue in api.queues()]


@pytest.mark.parametrize("priority", [None, 5, 9])
def test_removed_only_once_every_list_is_empty(own_client: redis.Redis,
                                               priority: int | None) -> None:
    TaskLoggerJob.set(queue=QUEUE, priority=priority).perform_later(1)
    assert own_client.llen(keys.list_key(QUEUE, priority)) == 1
    with pytest.raises(ValueError, match=r"queue 'reports' is not empty \(1 job\(s\) waiting\)"):
        api.Queue(QUEUE).remove()
    assert QUEUE in listed()
    api.Queue(QUEUE).clear()
    assert api.Queue(QUEUE).remove() is True
    assert QUEUE not in listed()
    assert api.Queue(QUEUE).remove() is False  # not listed any more
    TaskLoggerJob.set(queue=QUEUE).perform_later(2)  # enqueueing lists it again
    assert QUEUE in listed()


def test_a_configured_queue_is_not_removed(own_client: redis.Redis) -> None:
    own_client.sadd(keys.QUEUES, "default")
    with pytest.raises(ValueError, match="'default' is in the queues setting"):
        api.Queue("default").remove()
    assert own_client.sismember(keys.QUEUES, "default")


def test_the_queues_page_removes_an_empty_queue(own_client: redis.Redis) -> None:
    TaskLoggerJob.set(queue=QUEUE).perform_later(1)
    TaskLoggerJob.set(queue="other").perform_later(1)
    api.Queue("other").clear()
    client = Client()
    _, _, html = client.get("/queues")
    buttons = html.count('value="remove"')
    assert buttons == 1  # "other" only: "reports" holds a job, the configured ones are kept
    status, _, text = client.post(f"/queues/{QUEUE}", {"action": "remove", "queue": QUEUE})
    assert (status, text) == (409, "queue 'reports' is not empty (1 job(s) waiting): nothing "
                                   "was done; clear it first")
    status, _, _ = client.post("/queues/other", {"action": "remove", "queue": "other"},
                               with_csrf=False)
    assert status == 403 and "other" in listed()
    status, headers, _ = client.post("/queues/other", {"action": "remove", "queue": "other"})
    assert status == 303 and headers["Location"] == "/queues"
    assert "other" not in listed() and QUEUE in listed()


def test_the_cli_removes_an_empty_queue(own_client: redis.Redis) -> None:
    TaskLoggerJob.set(queue=QUEUE).perform_later(1)
    runner = CliRunner()
    refused = runner.invoke(main, ["queues", "remove", QUEUE])
    assert refused.exit_code == 1 and "is not empty (1 job(s) waiting)" in refused.output
    api.Queue(QUEUE).clear()
    removed = runner.invoke(main, ["queues", "remove", QUEUE])
    assert (removed.exit_code, removed.output) == (0, "removed queue 'reports'\n")
    again = runner.invoke(main, ["queues", "remove", QUEUE])
    assert (again.exit_code, again.output) == (0, "queue 'reports' was not listed\n")
    listing = runner.invoke(main, ["queues"])
    assert listing.exit_code == 0 and "default" in listing.output
    assert QUEUE not in listing.output
