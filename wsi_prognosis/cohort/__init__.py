"""manifest.csv and clinical.csv: parse, validate, derive outcome labels."""

from wsi_prognosis.cohort.clinical import read_clinical
from wsi_prognosis.cohort.manifest import read_manifest, manifest_from_folder

__all__ = ["read_clinical", "read_manifest", "manifest_from_folder"]
