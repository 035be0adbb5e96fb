"""Per-slide claims, so that several workers can share one output folder: `<out>/.claims/<key>`.

A worker claims a slide before working on it and releases the claim when it is done with it,
whatever the outcome. Other workers skip a slide with a live claim and take the next one; at the
end they wait for the slides others hold (`Claimer.wait_for`), taking over those whose holder
died. A claim only says who is working on a slide, never that it is finished: the finished output
stays the only proof of completion (each stage's atomic writes and resume).

Protocol (each step atomic on a local filesystem and on NFS):

- claim: the record (JSON: host, pid and its start time, worker id, stage, start and heartbeat
  times) is written to a unique temporary name in `.claims/` and hard-linked to `.claims/<key>`;
  the link fails with FileExistsError when the claim exists (atomic on every NFS version, where
  O_EXCL needs NFSv3+); a link whose reply was lost counts by the temporary file's link count.
- heartbeat: one thread per `Claimer` rewrites each claim it holds every `heartbeat_s` (temporary
  file + os.replace), after checking the claim still carries its worker id, so a claim taken over
  is never taken back; the thread stops refreshing it and logs who holds it now.
- stale: the heartbeat is older than `stale_s`; or the holder ran on this host (same host name and
  pid namespace) and its process is gone, a zombie, or its pid now belongs to a younger process;
  or the file is not a claim record (truncated, not JSON). Hosts sharing a folder are assumed to
  have clocks that agree to well within `stale_s` (NTP).
- takeover: the stale file is renamed to a unique tombstone (one renamer succeeds, the others get
  FileNotFoundError); the tombstone is checked to be the very bytes judged stale (a fresh record
  moved by mistake is linked back), then the claim is created as above and the takeover logged.
  Left open: a holder that stalls for more than `stale_s` and is taken over finishes its slide
  too (both write the same output atomically); and as its heartbeat checks the worker id just
  before its os.replace, a takeover landing in that instant would be overwritten.
- release: the claim is removed after checking it is still this worker's.

Why written here: filelock (4.3.1 is pinned in constraints.txt as a transitive dependency; the
project does not declare it) was checked. `UnixFileLock` (flock) is held by an open descriptor and
vanishes with the process, but on NFS it is only as reliable as the mount's lock manager (Linux
maps flock to NLM/NFSv4 locks; with `nolock` or `local_lock` it is silently node-local; Lustre
needs the `flock` mount option). `SoftFileLock` creates its marker with O_EXCL, has no heartbeat
and breaks only dead pids on its own host. Since 3.30, though, filelock ships `SoftFileLease`: an
O_EXCL marker refreshed by a heartbeat thread; a dead pid on the same host is taken over at once,
a malformed marker after 2 s (both tried with 4.3.1), any other once a contender has watched it
unchanged for `lease_duration` on its own clock (read in its source). It was not used: it is not a declared
dependency; it holds one thread and descriptor per lease; a contender that starts after a crash
still waits a whole lease before taking a dead claim from another host (that rule does not depend
on clocks agreeing, which the heartbeat-age rule here does); and the per-slide iteration, waiting,
counters and takeover log would still be needed around it. If filelock becomes a declared
dependency, `SoftFileLease` could replace `files.create`, `files.take_over` and the heartbeat.
"""

from wsi_prognosis.claims.claimer import DEFAULT_STALE_S, Claimer, ClaimSettings, claimed
from wsi_prognosis.claims.files import CLAIMS_DIR, check_claims_dir, read_claim

__all__ = ["CLAIMS_DIR", "DEFAULT_STALE_S", "ClaimSettings", "Claimer", "check_claims_dir", "claimed", "read_claim"]
