"""The claim files themselves: the record, creation by hard link, staleness, takeover, the folder check.

Functions of a folder (`<out>/.claims`) and bytes; `claims.claimer` adds the worker's state
(what it holds, the heartbeat thread, the counters). The protocol is described in `claims`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wsi_prognosis.errors import ConfigurationError

log = logging.getLogger("wsi_prognosis.claims")

CLAIMS_DIR = ".claims"
SEP = "~"               # in temporary and tombstone names only; never in a key


def token() -> str:
    return os.urandom(12).hex()


def check_key(key: str) -> None:
    if not key or key in {".", ".."} or any(c in key for c in ("/", "\\", "\0", SEP)):
        raise ValueError(f"claim key {key!r}: must be a file name without '/', '\\' or {SEP!r}.")


@dataclass(frozen=True)
class Identity:
    """Who writes a claim: the host, the pid namespace (containers sharing a host name) and the
    process with its start time (a recycled pid is another process)."""

    host: str
    pidns: str
    pid: int
    pid_start: float | None

    @classmethod
    def current(cls) -> Identity:
        try:
            pidns = os.readlink("/proc/self/ns/pid")
        except OSError:
            pidns = ""
        return cls(socket.gethostname(), pidns, os.getpid(), _process_start(os.getpid()))


def encode(identity: Identity, worker: str, stage: str, started: float) -> bytes:
    return json.dumps({"host": identity.host, "pidns": identity.pidns, "pid": identity.pid,
                       "pid_start": identity.pid_start, "worker": worker, "stage": stage, "started": started,
                       "heartbeat": time.time()}, sort_keys=True).encode()


def parse(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None


def read_claim(out_dir: str | os.PathLike[str], key: str) -> dict[str, Any] | None:
    """The claim record on `key` in `out_dir`, or None when there is none or it is not readable."""
    try:
        record = parse((Path(out_dir) / CLAIMS_DIR / key).read_bytes())
    except OSError:
        return None
    return record if isinstance(record, dict) else None


def describe(record: Any) -> str:
    """'host pid N (stage S, heartbeat A s ago)' for logs."""
    if not isinstance(record, dict):
        return "an unreadable claim file"
    try:
        age = f", heartbeat {time.time() - float(record['heartbeat']):.0f} s ago"
    except (KeyError, TypeError, ValueError):
        age = ""
    return f"{record.get('host')} pid {record.get('pid')} (stage {record.get('stage')}{age})"


def create(folder: Path, key: str, payload: bytes) -> bool:
    """Create `folder/key` holding `payload` unless it exists: write a unique temporary file, hard-link
    it to the claim name (FileExistsError: taken), remove the temporary name."""
    tmp = folder / f"{key}{SEP}{token()}.tmp"
    with open(tmp, "xb") as handle:
        handle.write(payload)
    try:
        os.link(tmp, folder / key)
        return True
    except FileExistsError:
        return os.stat(tmp).st_nlink == 2                # NFS: the link was made, its reply was lost
    finally:
        tmp.unlink(missing_ok=True)


def rewrite(folder: Path, key: str, payload: bytes) -> None:
    """Replace `folder/key` with `payload` atomically (temporary file + os.replace)."""
    tmp = folder / f"{key}{SEP}{token()}.tmp"
    tmp.write_bytes(payload)
    os.replace(tmp, folder / key)


def stale_reason(raw: bytes, me: Identity, stale_s: float) -> str | None:
    """Why the claim record `raw` is stale, or None while it is live."""
    record = parse(raw)
    try:
        host, pid, beat = str(record["host"]), int(record["pid"]), float(record["heartbeat"])
    except (TypeError, KeyError, ValueError):
        return f"not a claim record ({len(raw)} bytes, truncated or not JSON)"
    age = time.time() - beat
    if age > stale_s:
        return f"no heartbeat for {age:.0f} s (claims.stale_s={stale_s:g})"
    if host == me.host and record.get("pidns", "") == me.pidns and not _alive(pid, record.get("pid_start")):
        return f"process {pid} no longer runs on {host} (heartbeat {age:.0f} s ago)"
    return None


def take_over(folder: Path, key: str, raw: bytes) -> bool:
    """Move the stale record `raw` at `folder/key` aside to a unique tombstone. False when another
    worker moved it first (FileNotFoundError) or the file had changed (a fresh record, put back)."""
    tomb = folder / f"{key}{SEP}{token()}.stale"
    try:
        os.rename(folder / key, tomb)
    except FileNotFoundError:
        return False
    try:
        if tomb.read_bytes() == raw:
            return True
        try:
            os.link(tomb, folder / key)
        except FileExistsError:
            log.warning("%s: a live claim moved aside during a takeover could not be put back", key)
        return False
    finally:
        tomb.unlink(missing_ok=True)


def remove_leftovers(folder: Path, older_than_s: float) -> None:
    """Temporary files and tombstones a killed worker left behind."""
    for leftover in [*folder.glob(f"*{SEP}*.tmp"), *folder.glob(f"*{SEP}*.stale")]:
        with contextlib.suppress(OSError):
            if time.time() - leftover.stat().st_mtime > older_than_s:
                leftover.unlink()


def check_claims_dir(out_dir: str | os.PathLike[str]) -> Path:
    """Check, once and before any work, that `out_dir/.claims` can be written and that hard links and
    exclusive creation work there; return it. Raises ConfigurationError naming the folder and the fix."""
    folder = Path(out_dir) / CLAIMS_DIR
    fix = ("Fix: give out= a writable folder on a filesystem with hard links (local disk, NFS, Lustre), "
           "or run a single worker with claims.enabled=false.")
    probe, target = folder / f"probe{SEP}{token()}.tmp", folder / f"probe{SEP}{token()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with open(probe, "xb") as handle:
            handle.write(b"{}")
        os.link(probe, target)
        for again in (lambda: os.link(probe, target), lambda: os.close(os.open(target, os.O_CREAT | os.O_EXCL))):
            try:
                again()
            except FileExistsError:
                continue
            raise ConfigurationError(f"{folder}: creating a file that exists did not fail there, so two workers "
                                     f"could claim one slide. {fix}")
    except OSError as exc:
        raise ConfigurationError(f"{folder}: worker claims cannot be made there ({exc.strerror or exc}). {fix}") from exc
    finally:
        for path in (probe, target):
            with contextlib.suppress(OSError):
                path.unlink()
    return folder


def _process_start(pid: int) -> float | None:
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def _alive(pid: int, started: Any) -> bool:
    """Whether `pid` on this host still runs and is the process that wrote the claim."""
    import psutil

    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        return started is None or abs(process.create_time() - float(started)) < 1.0
    except psutil.NoSuchProcess:
        return False
    except (psutil.Error, TypeError, ValueError):
        return True                                      # it exists but cannot be inspected
