"""Helpers of the tests that run several CLI workers on one output folder (tile, embed, score).

Real `python -m wsi_prognosis.cli <stage> ...` processes are started at once. A tiny slide is done
in milliseconds, less than a worker's start-up, so a worker runs the CLI through a wrapper that
slows one per-slide function down: it prints `slow: <slide_id>` and sleeps SLOW_S seconds before
calling it. The slides then spread over the workers, and a test knows which slide a worker is in
the middle of when it kills it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

# SLOW_TARGET="module:function": the per-slide function to slow down; its first argument is the slide's
# manifest row (a dict with slide_id) or an object with such a `row` (a score plan, an embed task).
# Patched before the CLI imports the stage, so `from module import function` elsewhere gets it too.
SLOW_CLI = """
import importlib, os, runpy, sys, time
module_name, name = os.environ["SLOW_TARGET"].split(":")
module = importlib.import_module(module_name)
delay, original = float(os.environ.get("SLOW_S", "0")), getattr(module, name)
def slow(first, *args, **kwargs):
    row = first if isinstance(first, dict) else first.row
    print(f"slow: {row['slide_id']}", flush=True)
    time.sleep(delay)
    return original(first, *args, **kwargs)
setattr(module, name, slow)
runpy.run_module("wsi_prognosis.cli", run_name="__main__", alter_sys=True)
"""
SLOW_MARKER = re.compile(r"slow: (\S+)\n")


def start_worker(stage_args: Sequence[str], log: Path, target: str, delay_s: float) -> subprocess.Popen:
    """`wsi-prognosis <stage_args>` with `target` slowed down by `delay_s` per slide; output to `log`."""
    env = {**os.environ, "SLOW_TARGET": target, "SLOW_S": str(delay_s), "PYTHONUNBUFFERED": "1"}
    with open(log, "w") as handle:
        return subprocess.Popen([sys.executable, "-c", SLOW_CLI, *stage_args], stdout=handle,
                                stderr=subprocess.STDOUT, env=env)


def wait_all(workers: Sequence[subprocess.Popen], logs: Sequence[Path], timeout_s: float) -> None:
    """Every worker exits with 0 within `timeout_s` (the logs are shown otherwise); none is left running."""
    deadline = time.monotonic() + timeout_s
    try:
        for worker, log in zip(workers, logs):
            status = worker.wait(timeout=max(1.0, deadline - time.monotonic()))
            assert status == 0, f"{log}: exit {status}\n{log.read_text()[-4000:]}"
    finally:
        stop(workers)


def stop(workers: Sequence[subprocess.Popen]) -> None:
    for worker in workers:
        if worker.poll() is None:
            worker.kill()
        worker.wait()


def wait_inside_slide(worker: subprocess.Popen, log: Path, nth: int, timeout_s: float = 300) -> str:
    """Wait until `worker` has started its `nth` slowed slide; return that slide's id."""
    deadline = time.monotonic() + timeout_s
    while len(markers := SLOW_MARKER.findall(log.read_text())) < nth:
        assert worker.poll() is None, f"the worker ended before its slide {nth}:\n{log.read_text()[-4000:]}"
        assert time.monotonic() < deadline, f"no slide {nth} after {timeout_s} s:\n{log.read_text()[-4000:]}"
        time.sleep(0.02)
    return markers[nth - 1]


def kill_inside_slide(victim: subprocess.Popen, log: Path, nth: int = 2, timeout_s: float = 300) -> str:
    """SIGKILL `victim` once it has started its `nth` slowed slide (it holds that slide's claim, and its
    output is not written); return that slide's id."""
    slide_id = wait_inside_slide(victim, log, nth, timeout_s)
    os.kill(victim.pid, signal.SIGKILL)
    assert victim.wait(timeout=30) == -signal.SIGKILL
    return slide_id


def per_worker(logs: Sequence[Path], line: re.Pattern[str]) -> list[list[str]]:
    """The slide ids of `line` (a pattern whose group 1 is the slide id) in each worker's log."""
    return [line.findall(log.read_text()) for log in logs]


def assert_each_once(found: Sequence[Sequence[str]], expected: Sequence[str]) -> Counter[str]:
    """Every expected slide appears exactly once over all workers' lines."""
    counts = Counter(slide for slides in found for slide in slides)
    assert sorted(counts) == sorted(expected) and set(counts.values()) == {1}, counts
    return counts
