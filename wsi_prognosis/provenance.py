"""Run records: what ran, with which configuration, versions, inputs and seed.

Every stage calls `write_run_record` next to its outputs so a result can be traced back.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import platform
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from wsi_prognosis import __version__
from wsi_prognosis.atomic import write_text_atomic

TRACKED_PACKAGES = (
    "torch", "torchvision", "timm", "pytorch-lightning", "hydra-core", "openslide-python",
    "openslide-bin", "tifffile", "imagecodecs", "numpy", "scikit-image", "h5py", "pandas",
    "lifelines",
)


def package_versions(names: Iterable[str] = TRACKED_PACKAGES) -> dict[str, str]:
    """Installed versions of `names` (without importing them: importing torch costs seconds)."""
    versions = {"wsi-prognosis": __version__, "python": platform.python_version()}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def file_sha256(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    """sha256 of a whole file. For small files (tables, weights), never for slides."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_bytes), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_run_record(
    out_dir: str | Path,
    stage: str,
    config: Mapping[str, Any],
    inputs: Mapping[str, str | Path] | None = None,
    seed: int | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write `<out_dir>/run_<stage>.json`: resolved config, versions, input sha256s, seed."""
    hashed: dict[str, Any] = {}
    for label, path in (inputs or {}).items():
        p = Path(path)
        hashed[label] = {"path": str(p), "sha256": file_sha256(p) if p.is_file() else None}
    record = {
        "stage": stage,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": sys.argv,
        "config": dict(config),
        "seed": seed,
        "inputs": hashed,
        "versions": package_versions(),
        **(dict(extra) if extra else {}),
    }
    target = Path(out_dir) / f"run_{stage}.json"
    write_text_atomic(target, json.dumps(record, indent=2, default=str) + "\n")
    return target
