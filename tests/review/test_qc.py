"""QC flags on small slides: a slide that is half tissue is not "little tissue", however small it is."""

from __future__ import annotations

import pytest

from wsi_prognosis.errors import ConfigurationError
from wsi_prognosis.review.entry import QcThresholds, qc_flags


def test_little_tissue_is_relative_to_the_slide_area() -> None:
    limits = QcThresholds()  # 0.1 mm² (review.yaml qc.little_tissue_mm2) and 10 % of the slide (the default share)
    # the demo's slides: ~0.1 mm² scanned, half of it tissue -> not flagged (the absolute test alone flagged them)
    assert qc_flags({"tissue_mm2": 0.05}, limits, slide_mm2=0.11) == []
    assert qc_flags({"tissue_mm2": 0.05}, limits) == ["little tissue"]   # area unknown: the absolute test decides
    # a real slide (~200 mm² scanned) with a speck of tissue -> flagged; a small biopsy of 2 mm² -> not
    assert qc_flags({"tissue_mm2": 0.05}, limits, slide_mm2=200.0) == ["little tissue"]
    assert qc_flags({"tissue_mm2": 2.0}, limits, slide_mm2=200.0) == []
    with pytest.raises(ConfigurationError, match="little_tissue_share"):
        QcThresholds(little_tissue_share=1.5)


def test_half_tissue_slides_of_the_batch_are_not_flagged(scored_batch) -> None:
    from wsi_prognosis.review.index import build_index
    from wsi_prognosis.tiling import open_tile_store

    index = build_index(scored_batch)
    checked = [e for e in index.entries if e.qc.get("tissue_mm2") is not None]
    assert len(checked) >= 4
    for entry in checked:
        with open_tile_store(entry.tile_store) as store:
            width, height = store.dimensions
            share = entry.qc["tissue_mm2"] / (width * height * (store.mpp / 1000) ** 2)
        # far below 0.1 mm² of tissue, yet a large share of the (tiny) slide: no flag
        assert entry.qc["tissue_mm2"] < QcThresholds().little_tissue_mm2 and share > 0.25, (entry.slide_id, share)
        assert "little tissue" not in entry.flags, (entry.slide_id, entry.qc)
        index.check(entry)  # the background check recomputes the flags with the slide's area: still none
        assert "little tissue" not in entry.flags
