"""Claims in a shared output folder: claim, skip, release, heartbeat, staleness (old heartbeat, dead
pid, garbage file), takeover without stealing back, the takeover race between processes, waiting."""

from __future__ import annotations

import errno
import json
import logging
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from wsi_prognosis.claims import CLAIMS_DIR, Claimer, ClaimSettings, check_claims_dir, claimed, files, read_claim
from wsi_prognosis.errors import ConfigurationError


def write_claim(out: Path, key: str, **fields) -> Path:
    """A claim record as another worker would have written it (defaults: another host, fresh)."""
    now = time.time()
    record = {"host": "node-elsewhere", "pidns": "", "pid": 4242, "pid_start": None, "worker": "node-elsewhere:4242:x",
              "stage": "tile", "started": now, "heartbeat": now, **fields}
    path = out / CLAIMS_DIR / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))
    return path


def leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in (out / CLAIMS_DIR).iterdir() if files.SEP in p.name)


def test_claim_skip_release(tmp_path):
    with Claimer(tmp_path, stage="tile") as a, Claimer(tmp_path, stage="tile") as b:
        assert a.try_claim("s1")
        record = read_claim(tmp_path, "s1")
        assert record["worker"] == a.worker and record["pid"] == os.getpid() and record["stage"] == "tile"
        assert record["host"] == socket.gethostname() and record["heartbeat"] >= record["started"]
        assert not b.try_claim("s1")                              # live: skipped
        assert b.try_claim("s2")
        a.release("s1")
        assert read_claim(tmp_path, "s1") is None                # released: the file is gone
        assert b.try_claim("s1")
        assert a.counts() == {"taken": 1, "held_by_others": 0, "taken_over": 0}
        assert b.counts() == {"taken": 2, "held_by_others": 1, "taken_over": 0}
        assert sorted(b.held) == ["s1", "s2"]
    assert list((tmp_path / CLAIMS_DIR).iterdir()) == []          # __exit__ released what b still held


def test_done_work_is_not_claimed(tmp_path):
    with Claimer(tmp_path, stage="tile") as a:
        assert not a.try_claim("s1", done=lambda key: True)       # finished (e.g. its output exists): released at once
        assert read_claim(tmp_path, "s1") is None and a.taken == 0


def test_heartbeat_keeps_a_claim_alive_past_stale_s(tmp_path):
    with Claimer(tmp_path, stage="tile", stale_s=0.8, heartbeat_s=0.1) as a, \
            Claimer(tmp_path, stage="tile", stale_s=0.8) as b:
        assert a.try_claim("s1")
        first = read_claim(tmp_path, "s1")["heartbeat"]
        time.sleep(1.2)                                           # longer than stale_s
        record = read_claim(tmp_path, "s1")
        assert record["heartbeat"] > first + 0.5 and record["started"] < first + 0.01
        assert not b.try_claim("s1") and b.taken_over == 0
    assert leftovers(tmp_path) == []


def test_old_heartbeat_is_taken_over_and_logged(tmp_path, caplog):
    write_claim(tmp_path, "s1", heartbeat=time.time() - 100)
    with caplog.at_level(logging.WARNING, logger="wsi_prognosis.claims"), Claimer(tmp_path, stage="tile", stale_s=10) as a:
        assert a.try_claim("s1")
        assert read_claim(tmp_path, "s1")["worker"] == a.worker
        assert a.counts() == {"taken": 1, "held_by_others": 0, "taken_over": 1}
    message = caplog.text
    assert "s1: taking over the claim of node-elsewhere pid 4242" in message and "no heartbeat for 100 s" in message


def test_fresh_claim_from_another_host_is_live(tmp_path):
    write_claim(tmp_path, "s1", heartbeat=time.time() - 5)
    with Claimer(tmp_path, stage="tile", stale_s=10) as a:
        assert not a.try_claim("s1") and a.held_by_others == 1


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_dead_pid_on_this_host_is_taken_over_at_once(tmp_path, caplog):
    me = files.Identity.current()
    write_claim(tmp_path, "s1", host=me.host, pidns=me.pidns, pid=_dead_pid())     # heartbeat: just now
    with caplog.at_level(logging.WARNING, logger="wsi_prognosis.claims"), Claimer(tmp_path, stage="tile") as a:
        assert a.try_claim("s1") and a.taken_over == 1
    assert "no longer runs on" in caplog.text


def test_unreaped_killed_holder_counts_as_dead(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        me = files.Identity.current()
        write_claim(tmp_path, "s1", host=me.host, pidns=me.pidns, pid=holder.pid)
        with Claimer(tmp_path, stage="tile") as a:
            assert not a.try_claim("s1")                          # running: live
            os.kill(holder.pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while not a.try_claim("s1"):                          # a zombie (not reaped yet) is dead too
                assert time.monotonic() < deadline
                time.sleep(0.05)
    finally:
        holder.kill()
        holder.wait()


def test_recycled_pid_is_not_the_holder(tmp_path):
    me = files.Identity.current()
    write_claim(tmp_path, "live", host=me.host, pidns=me.pidns, pid=os.getpid(), pid_start=me.pid_start)
    write_claim(tmp_path, "recycled", host=me.host, pidns=me.pidns, pid=os.getpid(), pid_start=12345.0)
    write_claim(tmp_path, "other-namespace", host=me.host, pidns="pid:[1]", pid=_dead_pid())
    with Claimer(tmp_path, stage="tile") as a:
        assert not a.try_claim("live")
        assert a.try_claim("recycled")                            # same pid, another process start
        assert not a.try_claim("other-namespace")                 # another container: pid not checkable


@pytest.mark.parametrize("content", [b'{"host": "n", "pid": 1, "heart', b"\x00\xff garbage", b"", b"[1, 2]",
                                     b'{"host": "n"}'])
def test_garbage_claim_file_is_taken_over_and_logged(tmp_path, caplog, content):
    (tmp_path / CLAIMS_DIR).mkdir()
    (tmp_path / CLAIMS_DIR / "s1").write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="wsi_prognosis.claims"), Claimer(tmp_path, stage="tile") as a:
        assert a.try_claim("s1") and a.taken_over == 1
        assert read_claim(tmp_path, "s1")["worker"] == a.worker
    assert "s1: taking over the claim of" in caplog.text and "not a claim record" in caplog.text


def test_a_claim_taken_over_is_never_taken_back(tmp_path, caplog):
    with Claimer(tmp_path, stage="tile", stale_s=10, heartbeat_s=9) as a, Claimer(tmp_path, stage="tile", stale_s=10) as b:
        assert a.try_claim("s1")
        record = read_claim(tmp_path, "s1")                       # a stalls: its heartbeat is 20 s old
        (tmp_path / CLAIMS_DIR / "s1").write_text(json.dumps({**record, "heartbeat": time.time() - 20}))
        assert b.try_claim("s1") and b.taken_over == 1
        with caplog.at_level(logging.WARNING, logger="wsi_prognosis.claims"):
            a._refresh("s1")                                      # a's next heartbeat
        assert read_claim(tmp_path, "s1")["worker"] == b.worker   # not rewritten
        assert "s1" not in a.held and "taken over by" in caplog.text
        a.release("s1")                                           # and a's release leaves b's claim
        assert read_claim(tmp_path, "s1")["worker"] == b.worker


def test_takeover_puts_back_a_record_that_changed_since_it_was_judged(tmp_path):
    stale = write_claim(tmp_path, "s1", heartbeat=time.time() - 100).read_bytes()
    fresh = write_claim(tmp_path, "s1").read_bytes()              # e.g. another worker took it over meanwhile
    assert not files.take_over(tmp_path / CLAIMS_DIR, "s1", stale)
    assert (tmp_path / CLAIMS_DIR / "s1").read_bytes() == fresh and leftovers(tmp_path) == []
    assert files.take_over(tmp_path / CLAIMS_DIR, "s1", fresh)    # the bytes judged: moved aside
    assert not (tmp_path / CLAIMS_DIR / "s1").exists() and leftovers(tmp_path) == []


def test_takeover_race_interleaved_the_slow_taker_puts_the_winner_back(tmp_path, monkeypatch):
    """B judges the claim stale, A takes it over before B moves it: B must move A's fresh claim
    back, not keep it, and report the slide as held."""
    write_claim(tmp_path, "s1", heartbeat=time.time() - 100)
    real = files.take_over
    with Claimer(tmp_path, stage="tile", stale_s=10) as a, Claimer(tmp_path, stage="tile", stale_s=10) as b:
        def late(folder, key, raw):
            monkeypatch.setattr(files, "take_over", real)
            assert a.try_claim(key)                               # A wins in between
            return real(folder, key, raw)
        monkeypatch.setattr(files, "take_over", late)
        assert not b.try_claim("s1")
        assert read_claim(tmp_path, "s1")["worker"] == a.worker and a.taken_over == 1
        assert b.counts() == {"taken": 0, "held_by_others": 1, "taken_over": 0}
    assert list((tmp_path / CLAIMS_DIR).iterdir()) == []


def _contend(out: str, rounds: int, barrier, results) -> None:
    with Claimer(out, stage="tile", stale_s=10) as claimer:
        for r in range(rounds):
            barrier.wait()
            results.put((r, claimer.try_claim(f"s{r}"), claimer.worker))
        barrier.wait()                                            # hold the claims until every round is over


@pytest.mark.parametrize("n_processes", [2, 4])
def test_takeover_race_has_exactly_one_winner(tmp_path, n_processes):
    rounds = 25
    for r in range(rounds):
        write_claim(tmp_path, f"s{r}", heartbeat=time.time() - 100)
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(n_processes), context.Queue()
    processes = [context.Process(target=_contend, args=(str(tmp_path), rounds, barrier, results))
                 for _ in range(n_processes)]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=60) for _ in range(rounds * n_processes)]
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    for r in range(rounds):
        winners = [worker for round_, won, worker in outcomes if round_ == r and won]
        assert len(winners) == 1, (r, winners)
    assert list((tmp_path / CLAIMS_DIR).iterdir()) == []          # released, no temporary file or tombstone left


def test_claimed_yields_in_order_skips_held_and_waits_for_them(tmp_path):
    finished: set[str] = set()
    with Claimer(tmp_path, stage="tile", stale_s=10) as a, Claimer(tmp_path, stage="tile", stale_s=10) as b:
        assert b.try_claim("s2") and b.try_claim("s4")
        finished.add("s5")                                        # done before: neither claimed nor yielded
        calls = []

        def idle(seconds: float) -> None:                         # b meanwhile: finishes s4, gives s2 up unfinished
            calls.append(seconds)
            if len(calls) == 1:
                finished.add("s4")
                b.release("s4")
            elif len(calls) == 2:
                b.release("s2")

        got = []
        for item in claimed(a, ["s1", "s2", "s3", "s4", "s5"], done=finished.__contains__, poll_s=0.01, idle=idle):
            got.append(item)
            finished.add(item)
            a.release(item)
        assert got == ["s1", "s3", "s2"] and calls == [0.01, 0.01]
        assert a.counts() == {"taken": 3, "held_by_others": 2, "taken_over": 0}


def test_wait_for_takes_over_the_claims_of_a_killed_worker(tmp_path):
    code = ("import sys, time\nfrom wsi_prognosis.claims import Claimer\n"
            f"c = Claimer({str(tmp_path)!r}, stage='tile', stale_s=3).__enter__()\n"
            "assert c.try_claim('s1') and c.try_claim('s2')\nprint('held', flush=True)\ntime.sleep(60)\n")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        finished: set[str] = set()
        with Claimer(tmp_path, stage="tile", stale_s=3) as a:
            assert not a.try_claim("s1")
            holder.kill()                                         # SIGKILL: its claims stay behind
            started = time.monotonic()
            for key in a.wait_for(["s1", "s2"], done=finished.__contains__, poll_s=0.05):
                finished.add(key)
                a.release(key)
            assert finished == {"s1", "s2"} and a.taken_over == 2 and time.monotonic() - started < 10
    finally:
        holder.kill()
        holder.wait()


def test_leftovers_of_killed_workers_are_removed(tmp_path):
    folder = tmp_path / CLAIMS_DIR
    folder.mkdir()
    old, new = folder / f"s1{files.SEP}abc.tmp", folder / f"s2{files.SEP}def.stale"
    old.write_text("x")
    new.write_text("x")
    os.utime(old, (time.time() - 100, time.time() - 100))
    with Claimer(tmp_path, stage="tile", stale_s=10):
        assert not old.exists() and new.exists()                 # a fresh one may belong to a live worker


def test_check_claims_dir_accepts_a_normal_folder(tmp_path):
    assert check_claims_dir(tmp_path / "out") == tmp_path / "out" / CLAIMS_DIR
    assert list((tmp_path / "out" / CLAIMS_DIR).iterdir()) == []


@pytest.mark.parametrize("fault,message", [
    ("read-only", "Read-only file system"),
    ("no-links", "Operation not permitted"),
    ("not-exclusive", "creating a file that exists did not fail"),
])
def test_check_claims_dir_names_the_folder_and_the_fix(tmp_path, monkeypatch, fault, message):
    real_link = os.link
    if fault == "read-only":
        def fake_open(*args, **kwargs):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        monkeypatch.setattr(files, "open", fake_open, raising=False)
    elif fault == "no-links":
        def fake_link(src, dst, *args, **kwargs):
            raise OSError(errno.EPERM, os.strerror(errno.EPERM))
        monkeypatch.setattr(os, "link", fake_link)
    else:
        def fake_link(src, dst, *args, **kwargs):                 # a filesystem that overwrites silently
            if not os.path.exists(dst):
                real_link(src, dst)
        monkeypatch.setattr(os, "link", fake_link)
        monkeypatch.setattr(os, "open", lambda *args, **kwargs: os.dup(0))
    with pytest.raises(ConfigurationError) as info:
        check_claims_dir(tmp_path)
    text = str(info.value)
    assert str(tmp_path / CLAIMS_DIR) in text and message in text and "Fix:" in text


def test_settings_from_the_config_group():
    assert ClaimSettings.from_mapping(None) == ClaimSettings(enabled=True, stale_s=300.0)
    assert ClaimSettings.from_mapping({"enabled": False, "stale_s": 3, "heartbeat_s": None}).stale_s == 3
    for bad, key in [({"stale_s": 0}, "claims.stale_s"), ({"stale_s": "5m"}, "claims.stale_s"),
                     ({"enabled": "yes"}, "claims.enabled"), ({"stale": 3}, "claims.stale"),
                     ({"stale_s": 10, "heartbeat_s": 10}, "claims.heartbeat_s")]:
        with pytest.raises(ConfigurationError, match=key):
            ClaimSettings.from_mapping(bad)


def test_keys_that_are_not_file_names_are_refused(tmp_path):
    with Claimer(tmp_path, stage="tile") as a:
        for key in ["", "..", "a/b", f"a{files.SEP}b"]:
            with pytest.raises(ValueError):
                a.try_claim(key)


def test_exclusive_batch_task(tmp_path):
    with Claimer(tmp_path, stage="tile") as a, Claimer(tmp_path, stage="tile") as b:
        with a.exclusive("@summary.csv") as mine, b.exclusive("@summary.csv") as theirs:
            assert mine and not theirs
        assert read_claim(tmp_path, "@summary.csv") is None and a.counts()["taken"] == 0
