"""gunicorn settings of the till agent: one worker owns the readers; threads serve the page.

    gunicorn -c device_drivers/agent_gunicorn.py 'device_drivers.agent:create_app()'
"""

import os

bind = os.environ.get("LOYALTY_AGENT_BIND", "127.0.0.1:8765")
workers = 1  # never more: the readers belong to exactly one process
threads = 8  # event streams hold a thread each
worker_class = "gthread"
graceful_timeout = 3  # event streams never end by themselves


def post_worker_init(worker):
    worker.wsgi.extensions["agent"].start()


def worker_exit(server, worker):
    agent = getattr(worker, "wsgi", None)
    if agent is not None and hasattr(agent, "extensions"):
        agent.extensions["agent"].stop()
