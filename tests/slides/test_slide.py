"""`Slide` on the real slides in tests/data: open, MPP, fingerprint, regions, thumbnails, bad files."""

from __future__ import annotations

import numpy as np
import openslide
import pytest

from wsi_prognosis.errors import MppMissingError, SlideOpenError, SlideReadError
from wsi_prognosis.slides import Slide, slide_fingerprint


def test_cmu_opens_with_metadata_mpp_and_quickhash(cmu_slide):
    with Slide.from_path(cmu_slide) as slide:
        assert slide.dimensions == (2220, 2967)
        assert (slide.mpp, slide.mpp_source) == (pytest.approx(0.499), "metadata")
        assert slide.level_downsamples == (1.0,)
        assert slide.fingerprint.startswith("quickhash1-")
    assert slide_fingerprint(cmu_slide) == slide.fingerprint


def test_fingerprint_without_quickhash_uses_size_and_edges(slides_dir, tmp_path):
    text = slides_dir / "not-a-slide.svs"
    assert slide_fingerprint(text).startswith(f"size-{text.stat().st_size}-sha256-")
    big = tmp_path / "big.bin"
    big.write_bytes(bytes(3 << 20))
    before = slide_fingerprint(big)
    data = bytearray(big.read_bytes())
    data[-5] = 1                                       # a change in the last MiB is seen
    big.write_bytes(bytes(data))
    assert slide_fingerprint(big) != before


def test_read_region_at_native_mpp_equals_openslide(cmu_slide):
    reference = openslide.OpenSlide(str(cmu_slide))
    with Slide.from_path(cmu_slide) as slide:
        tile = slide.read_region(300, 700, 128, target_mpp=0.499)
    expected = np.asarray(reference.read_region((300, 700), 0, (128, 128)))[..., :3]
    assert tile.shape == (128, 128, 3) and tile.dtype == np.uint8
    assert np.array_equal(tile, expected)


def test_read_region_resamples_to_exact_size_and_physical_extent(cmu_slide):
    with Slide.from_path(cmu_slide) as slide:
        tile = slide.read_region(0, 0, 100, target_mpp=0.998)       # 200 level-0 px -> 100 px
        native = slide.read_region(0, 0, 200, target_mpp=0.499)
    assert tile.shape == (100, 100, 3)
    box_mean = native.reshape(100, 2, 100, 2, 3).mean(axis=(1, 3))
    assert np.abs(tile.astype(float) - box_mean).mean() < 6          # same content, halved


def test_thumbnail_has_exact_mpp_and_size(cmu_slide):
    with Slide.from_path(cmu_slide) as slide:
        thumb, mpp = slide.thumbnail(8.0)
        fine, fine_mpp = slide.thumbnail(0.1)                        # never finer than level 0
    assert mpp == 8.0
    assert thumb.shape == (int(np.ceil(2967 * 0.499 / 8)), int(np.ceil(2220 * 0.499 / 8)), 3)
    assert fine_mpp == pytest.approx(0.499) and fine.shape == (2967, 2220, 3)
    assert thumb[..., 1].mean() < 235                                # tissue is there, not blank


def test_no_mpp_slide_and_its_manifest_fix(tcga_no_mpp_slide):
    with pytest.raises(MppMissingError) as info:
        Slide.from_path(tcga_no_mpp_slide)
    assert str(tcga_no_mpp_slide) in str(info.value) and "mpp" in str(info.value)
    with Slide.from_path(tcga_no_mpp_slide, mpp=0.5) as slide:
        assert (slide.mpp, slide.mpp_source) == (0.5, "manifest")
        assert slide.plan_read(1.0).level == 1                       # 2.0005 within tolerance


@pytest.mark.parametrize("name", ["unopenable.tiff", "not-a-slide.svs", "does-not-exist.svs"])
def test_unopenable_files_raise_slide_open_error(slides_dir, name):
    with pytest.raises(SlideOpenError) as info:
        Slide.from_path(slides_dir / name)
    assert name in str(info.value) and "Fix:" in str(info.value)


def test_unreadable_slide_opens_but_fails_on_read(slides_dir):
    with Slide.from_path(slides_dir / "unreadable.svs") as slide:
        with pytest.raises(SlideReadError, match="unreadable.svs"):
            slide.thumbnail(8.0)


def test_slide_exposes_no_associated_images(cmu_slide):
    with Slide.from_path(cmu_slide) as slide:
        public = {name for name in dir(slide) if not name.startswith("_")}
    assert not {"associated_images", "properties", "label", "macro"} & public


def test_thumbnail_of_a_huge_level_is_read_in_bands(cmu_slide, monkeypatch):
    from wsi_prognosis.slides import slide as slide_module

    with Slide.from_path(cmu_slide) as slide:
        whole, _ = slide.thumbnail(8.0)
        monkeypatch.setattr(slide_module, "THUMBNAIL_WHOLE_LEVEL_PX", 1000)   # force the banded path
        monkeypatch.setattr(slide_module, "THUMBNAIL_BAND_PX", 300)
        banded, mpp = slide.thumbnail(8.0)
    assert mpp == 8.0 and banded.shape == whole.shape
    assert np.abs(banded.astype(int) - whole.astype(int)).mean() < 3        # same picture, other filter path
