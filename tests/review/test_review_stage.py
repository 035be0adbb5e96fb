"""`wsi-prognosis review` as a command: configuration, bad input, the port, the remote-host warning."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from wsi_prognosis.cli import main


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_port_in_use_is_a_clear_error_naming_the_fix(scored_batch, capsys) -> None:
    from wsi_prognosis.review.errors import PortInUseError
    from wsi_prognosis.review.server import bind

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(PortInUseError, match=rf"port {port} on 127.0.0.1 is already in use.*Fix: pass a free port, e.g. `port={port + 1}`"):
            bind("127.0.0.1", port)
        assert main(["review", f"scores={scored_batch}", f"port={port}"]) == 2
    err = capsys.readouterr().err
    assert "already in use" in err and "Fix:" in err and "Traceback" not in err


def test_a_folder_that_is_not_a_score_output_is_refused(tmp_path, capsys) -> None:
    assert main(["review", f"scores={tmp_path}"]) == 2
    assert "scores.csv: not found. Fix: scores= must be the out= folder" in capsys.readouterr().err
    assert main(["review", f"scores={tmp_path / 'nope'}"]) == 2
    assert "not a folder" in capsys.readouterr().err


@pytest.mark.parametrize("override, message", [
    ("port=70000", "port=70000: must be an integer >= 1 and <= 65535"),
    ("workers=-1", "workers=-1"),
    ("+qc.sharpness=3", "qc: unknown key(s) ['sharpness']"),
    ("manifest=/no/such.csv", "manifest=/no/such.csv: not a file"),
])
def test_bad_configuration_names_the_key(scored_batch, capsys, override: str, message: str) -> None:
    assert main(["review", f"scores={scored_batch}", override]) == 2
    assert message in capsys.readouterr().err


def test_remote_host_warns_and_localhost_does_not() -> None:
    from wsi_prognosis.review.server import remote_warning

    assert remote_warning("127.0.0.1") is None and remote_warning("localhost") is None
    assert "reachable from other machines" in remote_warning("0.0.0.0")


def test_manifest_supplies_moved_paths(scored_batch, tmp_path) -> None:
    from wsi_prognosis.review.index import build_index

    index = build_index(scored_batch)
    original = index.get("P0001-training-1").path
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(f"slide_id,patient_id,path,cohort\nMOVED-1,P0009,{original},training\n")
    moved = build_index(scored_batch, manifest).get("MOVED-1")
    build_index(scored_batch, manifest).check(moved)
    assert moved.path == original and moved.available, moved.reason


def test_the_command_serves_until_stopped_and_warns_for_every_interface(scored_batch) -> None:
    port = _free_port()
    command = [sys.executable, "-m", "wsi_prognosis.cli", "review", f"scores={scored_batch}", f"port={port}",
               "host=0.0.0.0", "workers=1"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"}, cwd=Path(scored_batch).parent)
    try:
        lines = []
        deadline = time.monotonic() + 60
        assert process.stdout is not None
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            lines.append(line)
            if "(Ctrl+C stops)" in line or (not line and process.poll() is not None):
                break
        output = "".join(lines)
        assert "WARNING: host=0.0.0.0: the review server is reachable from other machines" in output, output
        assert f"6 slide(s) from {scored_batch} at http://127.0.0.1:{port}/" in output, output
        page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30).read().decode()
        assert 'data-slide="V0001-validation-1"' in page
        tile = urllib.request.urlopen(f"http://127.0.0.1:{port}/dz/V0001-validation-1_files/9/0_0.jpeg", timeout=30)
        assert tile.status == 200 and tile.headers["content-type"] == "image/jpeg"
    finally:
        process.terminate()              # SIGTERM, as `docker stop` sends
        rest = process.communicate(timeout=30)[0]
    assert process.returncode == 0, rest   # a clean shutdown: worker pool closed, nothing leaked
    assert "leaked" not in rest and "Traceback" not in rest, rest
    assert not list(Path(scored_batch).glob(".hydra")) and not list(Path(scored_batch).glob("*.log"))  # wrote nothing
