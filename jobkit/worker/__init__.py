"""Everything that runs only inside a `jobkit worker`: the Celery app and its bootsteps (app.py,
boot.py, poller.py, shutdown.py), the consumer (consumer.py), the transport and its fetch
script (transport.py), membership, heartbeat and recovery (membership.py, heartbeat.py,
recovery.py), and how one job runs (execution.py, request.py)."""
