"""Ensemble members and the verified model bundle (see bundle.py); member selection (select.py)."""

from wsi_prognosis.ensemble.bundle import (
    Bundle,
    Member,
    bundle_id,
    derive_bundle,
    load_bundle,
    member_slide_score,
    member_tile_logits,
    write_bundle,
)

__all__ = [
    "Bundle", "Member", "bundle_id", "derive_bundle", "load_bundle", "member_slide_score", "member_tile_logits",
    "write_bundle",
]
