"""bench/run.py's own bookkeeping: what a run keeps when a part of it fails.

The steps themselves run for real in test_bench_generate.py; here they are replaced by
functions that answer or fail at once, since what is tested is the runner's handling."""

from __future__ import annotations

import json

from bench import run


def test_a_backend_without_its_data_set_loses_nothing_of_the_others(monkeypatch, tmp_path):
    def dataset(backend, _pg):
        if backend == "postgresql":
            raise ConnectionError("the server is gone")
        return run.Dataset(backend, {}, tmp_path, {"seconds": 1.0})

    def kiosk(_ds):
        return {"issue_s_p50": 0.1, "issue_s_max": 0.2, "kiosk_rss_mb": 50.0}

    def agent(_ds):
        raise RuntimeError("the probe failed")

    monkeypatch.setattr(run, "DATA", tmp_path)
    monkeypatch.setattr(run, "BACKENDS", ["postgresql", "sqlite"])
    monkeypatch.setattr(run, "STEPS", ["agent", "kiosk"])
    monkeypatch.setattr(run, "dataset", dataset)
    monkeypatch.setattr(run, "kiosk_bench", kiosk)
    monkeypatch.setattr(run, "agent_bench", agent)
    monkeypatch.setattr(run, "ROOT", tmp_path.parent)
    assert run.main() == 1
    [out] = tmp_path.glob("results-*.json")
    results = json.loads(out.read_text())
    pg, lite = results["backends"]["postgresql"], results["backends"]["sqlite"]
    assert pg["errors"] == {"dataset": "ConnectionError: the server is gone"}
    assert lite["kiosk"]["issue_s_p50"] == 0.1
    assert lite["errors"] == {"agent": "RuntimeError: the probe failed"}
    assert "finished" in results
