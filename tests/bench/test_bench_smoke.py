"""`make bench` at a tiny size, so that every scenario keeps working between real benchmark runs.

Nothing here judges speed: the figures only have to exist, be positive, and come with their
baselines; the counts the segment scenario checks against hand-written SQL must agree, and in the
fairness scenario the noisy workspace must be refused while every call the quiet one had answered
200 is stored.
"""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from tests.deploy.manifests import ROOT

SCENARIOS = (
    "1. Ingest", "2. Event → profile", "3. Trigger latency", "4. Segments", "5. Dispatch", "6. Memory", "7. Fairness",
    "8. Scheduled campaign", "9. Channels", "10. Frequency caps",
)


def test_every_scenario_runs_end_to_end_at_a_tiny_size(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--size", "tiny", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("| Scenario | Figure | Herald | Target | Raw baseline | Ratio | Met |")
    (result,) = tmp_path.glob("bench-tiny-*.json")
    document = json.loads(result.read_text())
    assert document["machine"]["cpus"] >= 1 and document["machine"]["versions"]["nats-py"]
    figures = document["figures"]
    assert {f["scenario"] for f in figures} == set(SCENARIOS)
    for f in figures:
        assert f["value"] > 0, f
        if f["baseline"]:
            assert f["baseline_value"] > 0 and f["ratio"] > 0, f
    memory = [f for f in figures if f["scenario"] == "6. Memory"]
    assert {f["metric"].split(": ")[1] for f in memory} == {"gateway", "ingest", "profiles", "segmenter", "scheduler", "dispatcher"}
    assert any("membership" in f["metric"] for f in figures), "the membership latency probe must see entries"
    numbers = [int(f["scenario"].split(".")[0]) for f in figures]
    assert numbers == sorted(numbers), "the table lists scenarios in order"
    fairness = {f["metric"]: f for f in figures if f["scenario"] == "7. Fairness"}
    refused = [f for m, f in fairness.items() if m.startswith("noisy") and m.endswith("answered 429")]
    assert refused and all(f["value"] > 0 for f in refused), "the noisy workspace's burst must pass its limit"
    stored = fairness["quiet track calls answered 200 and stored"]
    assert stored["met"], stored
    quiet = [m.split(":")[1] for m in fairness if m.startswith("quiet p")]
    assert quiet == [" track call due → answered"] * 3 + [" API GET due → answered"], quiet


def _services(parent: psutil.Process) -> list[psutil.Process]:
    found = []
    for child in parent.children(recursive=True):
        try:
            if "serve" in child.cmdline():
                found.append(child)
        except psutil.Error:
            pass  # gone, or not ours to read
    return found


def test_a_terminated_bench_leaves_no_process_behind(tmp_path: Path) -> None:
    bench = subprocess.Popen(
        [sys.executable, "-m", "bench", "--size", "tiny", "--only", "segments", "--out", str(tmp_path)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        parent = psutil.Process(bench.pid)
        deadline = time.monotonic() + 90
        while len(_services(parent)) < 6 and time.monotonic() < deadline and bench.poll() is None:
            time.sleep(0.2)
        started = parent.children(recursive=True)
        assert len(_services(parent)) == 6, "the bench's stack did not start"
        bench.send_signal(signal.SIGTERM)
        bench.wait(timeout=60)
        _, alive = psutil.wait_procs(started, timeout=30)
        assert alive == [], f"left running: {[p.pid for p in alive]}"
    finally:
        if bench.poll() is None:
            bench.kill()
