"""One worker's claims in an output folder: `Claimer` (claim, release, wait, heartbeat) and `claimed`."""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any, TypeVar

from wsi_prognosis.claims import files
from wsi_prognosis.errors import ConfigurationError

log = logging.getLogger("wsi_prognosis.claims")

DEFAULT_STALE_S = 300.0
DEFAULT_BATCH_SLIDES = 8    # score: few enough that the slides spread over workers, enough to keep the engine busy
T = TypeVar("T")


@dataclass(frozen=True)
class ClaimSettings:
    """The `claims` config group. `heartbeat_s` defaults to stale_s / 4; `poll_s` (how often a waiting
    worker looks at the few claims others hold) to stale_s / 10, within 0.1 to 1 s. `batch_slides`:
    how many slides `score` claims at a time (it runs them through its engine together; `tile` and
    `embed` claim one slide at a time, as a process or the reader gets free)."""

    enabled: bool = True
    stale_s: float = DEFAULT_STALE_S
    heartbeat_s: float | None = None
    poll_s: float | None = None
    batch_slides: int = DEFAULT_BATCH_SLIDES

    def __post_init__(self) -> None:
        if isinstance(self.batch_slides, bool) or not isinstance(self.batch_slides, int) or self.batch_slides < 1:
            raise ConfigurationError(f"claims.batch_slides={self.batch_slides!r}: must be an integer >= 1.")
        for name in ("stale_s", "heartbeat_s", "poll_s"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not math.isfinite(value) or value <= 0):
                raise ConfigurationError(f"claims.{name}={value!r}: must be a positive number of seconds.")
        if self.heartbeat_s is not None and self.heartbeat_s >= self.stale_s:
            raise ConfigurationError(f"claims.heartbeat_s={self.heartbeat_s!r}: must be below claims.stale_s="
                                     f"{self.stale_s!r}. Fix: leave it unset (stale_s / 4).")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> ClaimSettings:
        """From the `claims` config group (a plain mapping); None keeps the defaults."""
        values = dict(values or {})
        unknown = sorted(set(values) - {"enabled", "stale_s", "heartbeat_s", "poll_s", "batch_slides"})
        if unknown:
            raise ConfigurationError(f"claims.{unknown[0]}: unknown key. Known: enabled, stale_s, heartbeat_s, poll_s, "
                                     "batch_slides.")
        if not isinstance(values.get("enabled", True), bool):
            raise ConfigurationError(f"claims.enabled={values['enabled']!r}: must be true or false.")
        return cls(**{k: v for k, v in values.items() if v is not None})


class Claimer:
    """This worker's claims in one output folder, and the heartbeat thread that keeps them alive.

    Use it as a context manager: `__exit__` stops the thread and releases what is still held.
    Counters, in distinct keys: `taken` (claimed to work on), `taken_over` (of those, from a stale
    claim), `held_by_others` (found under another worker's live claim at least once).
    """

    def __init__(self, out_dir: str | PathLike[str], *, stage: str, stale_s: float = DEFAULT_STALE_S,
                 heartbeat_s: float | None = None, poll_s: float | None = None) -> None:
        ClaimSettings(stale_s=stale_s, heartbeat_s=heartbeat_s, poll_s=poll_s)  # validates
        self.dir = Path(out_dir) / files.CLAIMS_DIR
        self.stage = stage
        self.stale_s = float(stale_s)
        self.heartbeat_s = float(heartbeat_s or self.stale_s / 4)
        self.poll_s = float(poll_s or min(1.0, max(0.1, self.stale_s / 10)))
        self.identity = files.Identity.current()
        self.worker = f"{self.identity.host}:{self.identity.pid}:{files.token()[:8]}"
        self.taken = self.taken_over = 0
        self._others: set[str] = set()
        self._held: dict[str, float] = {}           # key -> when this worker claimed it
        self._lock = threading.Lock()               # a claim is never refreshed while it is released
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def from_settings(cls, out_dir: str | PathLike[str], settings: ClaimSettings, *, stage: str) -> Claimer:
        return cls(out_dir, stage=stage, stale_s=settings.stale_s, heartbeat_s=settings.heartbeat_s,
                   poll_s=settings.poll_s)

    @property
    def held_by_others(self) -> int:
        return len(self._others)

    @property
    def held(self) -> list[str]:
        with self._lock:
            return list(self._held)

    def counts(self) -> dict[str, int]:
        return {"taken": self.taken, "held_by_others": self.held_by_others, "taken_over": self.taken_over}

    def __enter__(self) -> Claimer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        """Make the folder, remove what killed workers left, start the heartbeat (once)."""
        if self._thread is not None:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        files.remove_leftovers(self.dir, older_than_s=self.stale_s)
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name=f"claims-{self.stage}", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the heartbeat and release every claim still held."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        for key in self.held:
            self.release(key)

    def try_claim(self, key: str, *, done: Callable[[str], bool] | None = None) -> bool:
        """Claim `key`. True: this worker holds it now (and, given `done`, `done(key)` is still false
        once claimed) and must `release` it. False: another worker holds a live claim on it, or it is done."""
        return self._try(key, done, count=True)

    def release(self, key: str) -> None:
        """Remove this worker's claim on `key` (nothing happens for a key it does not hold)."""
        with self._lock:
            if self._held.pop(key, None) is None:
                return
            record = files.read_claim(self.dir.parent, key)
            if record is not None and record.get("worker") == self.worker:
                (self.dir / key).unlink(missing_ok=True)
            else:
                log.warning("%s: the claim had been taken over by %s; left to them", key, files.describe(record))

    @contextlib.contextmanager
    def exclusive(self, name: str) -> Iterator[bool]:
        """A claim on a batch-level task for the with-block; yields whether this worker got it (not
        counted). Start `name` with "@" so that it never meets a slide id, e.g. "@summary.csv"."""
        mine = self._try(name, None, count=False)
        try:
            yield mine
        finally:
            if mine:
                self.release(name)

    def wait_for(self, keys: Iterable[str], *, done: Callable[[str], bool], poll_s: float | None = None,
                 idle: Callable[[float], None] | None = None) -> Iterator[str]:
        """Return once every key is done; meanwhile yield each key this worker manages to claim (its
        holder released it unfinished, or died), for the caller to work on and release. `idle(s)`
        is called between polls (default time.sleep): a caller with work in flight collects it there."""
        waiting = list(dict.fromkeys(keys))
        sleep, poll = idle or time.sleep, poll_s or self.poll_s
        noted = -math.inf
        while waiting:
            still = []
            for key in waiting:
                if done(key):
                    continue
                if self.try_claim(key, done=done):
                    yield key
                else:
                    still.append(key)
            waiting = [key for key in still if not done(key)]
            if waiting:
                if time.monotonic() - noted > 60:
                    noted = time.monotonic()
                    log.info("waiting for %d item(s) other workers hold: %s", len(waiting),
                             ", ".join(waiting[:5]) + (" ..." if len(waiting) > 5 else ""))
                sleep(poll)

    def _try(self, key: str, done: Callable[[str], bool] | None, count: bool) -> bool:
        files.check_key(key)
        self.start()
        for _ in range(4):
            if self._create(key):
                return self._keep(key, done, count, over=False)
            try:
                raw = (self.dir / key).read_bytes()
            except FileNotFoundError:
                continue                                 # released meanwhile: try again
            why = files.stale_reason(raw, self.identity, self.stale_s)
            if why is None:
                break
            if files.take_over(self.dir, key, raw):          # moved aside by this worker alone: logged once
                log.warning("%s: taking over the claim of %s: %s", key, files.describe(files.parse(raw)), why)
                if self._create(key):
                    return self._keep(key, done, count, over=True)
        if count:
            self._others.add(key)
        return False

    def _keep(self, key: str, done: Callable[[str], bool] | None, count: bool, over: bool) -> bool:
        if done is not None and done(key):
            self.release(key)
            return False
        if count:
            self.taken += 1
            self.taken_over += over
        return True

    def _create(self, key: str) -> bool:
        started = time.time()
        if not files.create(self.dir, key, files.encode(self.identity, self.worker, self.stage, started)):
            return False
        with self._lock:
            self._held[key] = started
        return True

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            for key in self.held:
                try:
                    self._refresh(key)
                except OSError as exc:
                    log.warning("%s: claim heartbeat failed (%s); trying again in %.0f s", key, exc, self.heartbeat_s)

    def _refresh(self, key: str) -> None:
        with self._lock:
            if key not in self._held:
                return
            record = files.read_claim(self.dir.parent, key)
            if record is None or record.get("worker") != self.worker:   # taken over: never take it back
                del self._held[key]
                log.warning("%s: this worker's claim was taken over by %s; no longer refreshed",
                            key, files.describe(record))
                return
            files.rewrite(self.dir, key, files.encode(self.identity, self.worker, self.stage, self._held[key]))


def claimed(claimer: Claimer, items: Iterable[T], *, key: Callable[[T], str] | None = None,
            done: Callable[[str], bool] | None = None, wait: bool = True, poll_s: float | None = None,
            idle: Callable[[float], None] | None = None) -> Iterator[T]:
    """Yield, in order, the items this worker claims (the caller releases each when done with it),
    skipping those that are done or that others hold; given `done`, then wait for the skipped ones
    and yield those that become claimable (`Claimer.wait_for`). Without `done` nothing tells a
    finished item from an abandoned one, so there is no waiting."""
    skipped: dict[str, T] = {}
    for item in items:
        k = str(key(item)) if key is not None else str(item)
        if done is not None and done(k):
            continue
        if claimer.try_claim(k, done=done):
            yield item
        else:
            skipped[k] = item
    if wait and done is not None and skipped:
        for k in claimer.wait_for(list(skipped), done=done, poll_s=poll_s, idle=idle):
            yield skipped[k]
