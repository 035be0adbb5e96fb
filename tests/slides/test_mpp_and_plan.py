"""MPP resolution order and the read-plan rule, on plain property dicts (no slide needed)."""

from __future__ import annotations

import pytest

from wsi_prognosis.errors import MppMissingError, ResolutionError
from wsi_prognosis.slides import plan_read, resolve_mpp

META = {"openslide.mpp-x": "0.2522", "openslide.mpp-y": "0.2522", "openslide.objective-power": "40"}


def test_metadata_wins_and_a_disagreeing_manifest_only_warns():
    assert resolve_mpp(META, "s.svs").source == "metadata"
    agreeing = resolve_mpp(META, "s.svs", manifest_mpp=0.2525)
    assert agreeing.mpp == pytest.approx(0.2522) and agreeing.warnings == ()
    disagreeing = resolve_mpp(META, "s.svs", manifest_mpp=0.5)
    assert disagreeing.mpp == pytest.approx(0.2522)
    assert "disagrees" in disagreeing.warnings[0]


def test_manifest_then_objective_power_only_when_allowed():
    power_only = {"openslide.objective-power": "20"}
    assert resolve_mpp(power_only, "s.svs", manifest_mpp=0.48) == resolve_mpp({}, "s.svs", manifest_mpp=0.48)
    assert resolve_mpp(power_only, "s.svs", manifest_mpp=0.48).source == "manifest"
    derived = resolve_mpp(power_only, "s.svs", allow_objective_power=True)
    assert (derived.mpp, derived.source) == (0.5, "objective-power")   # 20x ≙ 0.5 µm/px
    assert resolve_mpp({"openslide.objective-power": "40"}, "s", allow_objective_power=True).mpp == 0.25
    with pytest.raises(MppMissingError) as info:
        resolve_mpp(power_only, "/data/s.svs")
    message = str(info.value)
    assert "/data/s.svs" in message and "MPP" in message
    assert "`mpp` column" in message and "slides.allow_objective_power=true" in message and "20x" in message


def test_missing_everything_and_nonsense_values():
    with pytest.raises(MppMissingError, match="no objective power"):
        resolve_mpp({"openslide.mpp-x": "0", "openslide.mpp-y": "nan"}, "s.svs", allow_objective_power=True)
    with pytest.raises(MppMissingError):
        resolve_mpp({}, "s.svs", manifest_mpp=float("nan"))


def test_anisotropic_pixels_are_refused_with_both_values():
    with pytest.raises(ResolutionError, match=r"mpp-x=0\.25.*mpp-y=0\.3"):
        resolve_mpp({"openslide.mpp-x": "0.25", "openslide.mpp-y": "0.3"}, "s.svs")


def test_plan_picks_the_coarsest_level_not_coarser_than_needed():
    downsamples = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
    plan = plan_read(0.25, downsamples, 1.0)            # 10x from a 40x pyramid: level 2, no resampling
    assert (plan.level, plan.downsample, plan.scale, plan.resamples) == (2, 4.0, 1.0, False)
    plan = plan_read(0.25, downsamples, 1.5)            # needs 6x: level 2 (4x), resample by 1.5
    assert (plan.level, plan.scale) == (2, 1.5)
    assert plan_read(0.25, downsamples, 8.0).level == 5
    assert plan_read(0.25, (1.0, 4.016), 1.0).level == 1  # 0.4 % coarser: within LEVEL_TOLERANCE
    assert plan_read(0.25, (1.0, 4.2), 1.0).level == 0    # 5 % coarser: too coarse, read level 0
    assert plan_read(0.499, (1.0,), 1.0).scale == pytest.approx(1.0 / 0.499)


def test_upsampling_rule_40x_on_a_20x_scan():
    assert plan_read(0.26, (1.0,), 0.25).scale == pytest.approx(0.25 / 0.26)   # 4 % up: accepted
    with pytest.raises(ResolutionError) as info:
        plan_read(0.499, (1.0,), 0.25, path="cmu.svs")                        # 2x up: refused
    assert "cmu.svs" in str(info.value) and "slides.max_upsample" in str(info.value)
    plan = plan_read(0.499, (1.0,), 0.25, max_upsample=2.0)                  # allowed on purpose
    assert plan.level == 0 and plan.scale == pytest.approx(0.25 / 0.499)
