"""The till agent's share of a tap, and how fast it replays its offline queue (for bench/run.py).

    python bench/agent_probe.py --server-url URL --device-key KEY  < card-urls.json

The real agent (``device_drivers.agent``) with its ``sim:`` reader, its outbox and its HTTP
client, against the service at URL:

- direct: the same taps POSTed by the agent's own ``ServiceClient``, one after the other
  (what the service takes);
- through the agent: a card presented to the reader, until the agent publishes the record on
  its event stream (reader thread, outbox, dispatcher, client, publication);
- the overhead is the difference of the medians (and of the 90th percentiles);
- replay: N taps recorded in the outbox while "offline", then the agent started: the time
  until its dispatcher has delivered them all.

Prints one JSON document. Each card is tapped once (no rate limit, no visit-gap effects).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


def agent_app(server_url: str, key: str, instance: Path, **extra):
    from device_drivers.agent import create_app

    return create_app({"SERVER_URL": server_url, "DEVICE_KEY": key, "READERS": "sim:",
                       "INSTANCE_PATH": str(instance), "HEARTBEAT_INTERVAL": 0.0,
                       "LOG_LEVEL": "WARNING", **extra})


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--server-url", required=True)
    parser.add_argument("--device-key", required=True)
    parser.add_argument("--taps", type=int, default=200)
    parser.add_argument("--replay", type=int, default=1000)
    args = parser.parse_args()
    cards = json.load(sys.stdin)
    n = args.taps
    if len(cards) < 2 * n + args.replay + 20:
        raise SystemExit(f"need {2 * n + args.replay + 20} cards, got {len(cards)}")
    instance = Path(tempfile.mkdtemp(prefix="bench-agent-probe-"))
    try:
        result = probe(args, cards, instance)
    finally:
        shutil.rmtree(instance, ignore_errors=True)
    print(json.dumps(result))
    return 0


def probe(args, cards: list[str], instance: Path) -> dict:
    from device_drivers.base import Tap
    from device_drivers.forwarder import ServiceClient
    from device_drivers.outbox import Outbox

    n = args.taps
    api = args.server_url.rstrip("/")

    # ----- the same taps two ways, alternating (so that both see the same service state):
    # posted by the agent's own client, and presented to the agent's reader until the
    # agent publishes the record (reader -> dispatcher -> service -> published record)
    client = ServiceClient(api, args.device_key)
    app = agent_app(api, args.device_key, instance / "live")
    agent = app.extensions["agent"]
    agent.start()
    events = agent.subscribe()
    reader = agent.sim_reader()

    def post(url: str) -> float:
        body = {"event_id": str(uuid.uuid4()), **Tap(reader="sim:", url=url).as_payload()}
        started = time.perf_counter()
        client.post("/taps", body)
        return time.perf_counter() - started

    def present(url: str) -> tuple[float, bool]:
        started = time.perf_counter()
        reader.present(url=url)
        while True:
            event = events.get(timeout=30)
            if event and event[0] == "tap":
                return time.perf_counter() - started, bool(event[2]["ok"])

    direct, through, refused = [], [], 0
    try:
        pairs = list(zip(cards[0:2 * (n + 10):2], cards[1:2 * (n + 10):2], strict=True))
        for i, (one, other) in enumerate(pairs):
            seconds, ok = present(other)
            spent = post(one)
            if i >= 10:  # the first ones warm both connections
                direct.append(spent)
                through.append(seconds)
                refused += 0 if ok else 1
    finally:
        agent.stop()
        client.close()

    # ----- replay: taps recorded while the service was away, then the agent starts
    queue_path = instance / "replay" / "agent-queue.sqlite3"
    queue_path.parent.mkdir(parents=True)
    outbox = Outbox(queue_path).open()
    for url in cards[20 + 2 * n:20 + 2 * n + args.replay]:
        outbox.add("tap", {"event_id": str(uuid.uuid4()),
                           **Tap(reader="sim:", url=url).as_payload()})
    outbox.close()
    app = agent_app(api, args.device_key, instance / "replay")
    agent = app.extensions["agent"]
    started = time.perf_counter()
    agent.start()
    try:
        drained = agent.dispatcher.drained(timeout=600)
        seconds = time.perf_counter() - started
        failed = agent.dispatcher.failed
    finally:
        agent.stop()

    ms = 1000.0
    return {
        "direct_ms_p50": round(statistics.median(direct) * ms, 2),
        "direct_ms_p90": round(percentile(direct, 90) * ms, 2),
        "agent_ms_p50": round(statistics.median(through) * ms, 2),
        "agent_ms_p90": round(percentile(through, 90) * ms, 2),
        "overhead_ms": round((statistics.median(through) - statistics.median(direct)) * ms, 2),
        "overhead_ms_p90": round((percentile(through, 90) - percentile(direct, 90)) * ms, 2),
        "taps": n, "refused": refused,
        "replayed": args.replay, "replay_s": round(seconds, 3), "replay_drained": drained,
        "replay_refused": failed, "replay_per_s": round(args.replay / seconds, 1),
    }


if __name__ == "__main__":
    sys.exit(main())
