"""manifest.csv and clinical.csv: parse, validate, derive outcome labels.

Names load on first use, so `from wsi_prognosis.cohort.manifest import read_manifest_rows` (the
`tile` stage) does not import pandas through `clinical`.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "read_clinical": "wsi_prognosis.cohort.clinical",
    "read_manifest": "wsi_prognosis.cohort.manifest",
    "read_manifest_rows": "wsi_prognosis.cohort.manifest",
    "manifest_from_folder": "wsi_prognosis.cohort.manifest",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
