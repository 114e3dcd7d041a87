"""How long each page of the web app takes with 100,000 entries in a queue and in each set,
and how a chunked "Retry now all" over the retry set goes.

A private redis-server is filled with real messages and set entries (as the worker writes
them); the WSGI app is called in this process, so the figures are the app's and Redis' time,
not a network's. Each page is timed `--repeat` times; the median is printed. Then "Retry now
all" runs as the progress page's script runs it, one chunk a request, a set page read between
chunks: its total time, chunks, slowest chunk and that page's median are printed.

    .venv/bin/python bench/web_pages.py [--entries 100000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.harness import private_redis, run_main  # noqa: E402

CHUNK = 5_000


def fill(client: redis.Redis, entries: int) -> None:
    """`entries` jobs waiting in `default` and in each of the three sets, recent enough that no
    dead-set trim lets them go."""
    from jobkit import keys
    from jobkit.celery_message import build_message
    from jobkit.job_sets import entry_member

    now = time.time()
    for start in range(0, entries, CHUNK):
        with client.pipeline(transaction=False) as pipe:
            for i in range(start, min(start + CHUNK, entries)):
                payload = {"job_class": "app.jobs.ReportJob", "job_id": str(uuid.uuid4()),
                           "queue_name": "default", "priority": None, "executions": 0,
                           "args": [i, f"customer-{i}"], "kwargs": {}, "enqueued_at": now}
                key, message = build_message(payload, str(uuid.uuid4()))
                pipe.lpush(key, message)
                for zset, score in ((keys.SCHEDULE, now + i), (keys.RETRY, now + i),
                                    (keys.DEAD, now - i)):
                    member = entry_member(key, message, job_id=payload["job_id"],
                                          job_class=payload["job_class"], queue="default",
                                          payload=payload, failed_at=now - i, retry_count=1,
                                          error_class="TimeoutError",
                                          error_message=f"report {i} timed out")
                    pipe.zadd(zset, {member: score})
            pipe.execute()
    client.sadd(keys.QUEUES, "default")


def call(app, method: str, path: str, body: bytes = b"", cookie: str = ""
         ) -> tuple[str, dict[str, str], bytes]:
    """One request to the WSGI app: status, headers, body."""
    path, _, query = path.partition("?")
    environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query,
               "wsgi.input": io.BytesIO(body), "CONTENT_LENGTH": str(len(body)),
               "CONTENT_TYPE": "application/x-www-form-urlencoded", "HTTP_COOKIE": cookie,
               "SERVER_NAME": "bench", "SERVER_PORT": "80"}
    answer: dict[str, Any] = {}

    def start_response(status: str, headers: list) -> None:
        answer.update(status=status, headers=dict(headers))

    content = b"".join(app(environ, start_response))
    return answer["status"], answer["headers"], content


def timed(app, path: str, repeat: int) -> tuple[float, str]:
    """The median milliseconds of `repeat` GETs of `path`, and its status."""
    times, status = [], ""
    for _ in range(repeat):
        began = time.perf_counter()
        status = call(app, "GET", path)[0]
        times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times), status


def retry_all(app, page: str) -> None:
    """ "Retry now all" on the retry set, a chunk a request as the progress page's script
    asks, `page` read between chunks."""
    _, headers, html = call(app, "GET", "/retries")
    cookie = headers["Set-Cookie"].split(";")[0]
    found = re.search(rb'name="csrf" value="([^"]+)"', html)
    assert found is not None, "the retries page has a form"
    token = found.group(1).decode()
    began = time.perf_counter()
    _, headers, _ = call(app, "POST", "/retries", f"csrf={token}&action=all&then=push".encode(),
                         cookie)
    steps, pages, state = [], [], {"finished": False, "done": 0}
    while not state["finished"]:
        step = time.perf_counter()
        state = json.loads(call(app, "POST", headers["Location"],
                                f"csrf={token}&json=1".encode(), cookie)[2])
        steps.append((time.perf_counter() - step) * 1000)
        pages.append(timed(app, page, 1)[0])
    print(f'  "Retry now all" of {state["done"]:,}: {time.perf_counter() - began:.1f} s in '
          f"{len(steps) + 1} chunks (slowest {max(steps):.1f} ms); {page} between chunks: "
          f"median {statistics.median(pages):.1f} ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    options = parser.parse_args()

    def body(workdir: Path) -> None:
        with private_redis(workdir) as url:
            os.environ["REDIS_URL"] = url
            import jobkit
            from jobkit.web import create_app

            jobkit.configure()
            client = redis.Redis.from_url(url)
            began = time.perf_counter()
            fill(client, options.entries)
            print(f"filled {options.entries:,} entries in a queue and each set in "
                  f"{time.perf_counter() - began:.1f} s; median of {options.repeat} GETs:")
            deep = options.entries - 25
            app = create_app()
            for path in ("/", "/queues", "/queues/default", f"/queues/default?start={deep}",
                         "/busy", "/scheduled", "/retries", "/dead", f"/dead?start={deep}",
                         "/dead?q=customer-99999", "/dead?q=customer-1&start=1000",
                         "/dead?class=app.jobs.ReportJob&queue=default",
                         f"/retries?class=app.jobs.ReportJob&start={deep}", "/metrics/page",
                         "/metrics", "/status.json"):
                ms, status = timed(app, path, options.repeat)
                print(f"  {path:<46} {ms:8.1f} ms  {status}")
            retry_all(app, "/dead")

    return run_main(body)


if __name__ == "__main__":
    sys.exit(main())
