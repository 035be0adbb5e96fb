"""TissueParams: documented defaults, strict from_dict, one µm -> px conversion."""

from __future__ import annotations

import dataclasses

import pytest

from wsi_prognosis.errors import ConfigurationError
from wsi_prognosis.tissue import TissueParams, pixel_sizes


def test_defaults_and_round_trip():
    params = TissueParams()
    assert params.mask_mpp == 8.0 and params.threshold_method == "otsu" and params.detect_pen
    assert TissueParams.from_dict(None) == params
    assert TissueParams.from_dict({}) == params
    assert TissueParams.from_dict(params.to_dict()) == params
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.mask_mpp = 4.0  # type: ignore[misc]


def test_from_dict_converts_plain_values():
    params = TissueParams.from_dict({"mask_mpp": 4, "blue_hue_deg": [190, 245], "detect_pen": False})
    assert params.mask_mpp == 4.0 and isinstance(params.mask_mpp, float)
    assert params.blue_hue_deg == (190.0, 245.0)
    assert params.detect_pen is False


@pytest.mark.parametrize(
    ("d", "message"),
    [
        ({"mask_mp": 8.0}, r"tissue\.mask_mp: unknown .*mask_mpp"),
        ({"mask_mpp": "eight"}, r"tissue\.mask_mpp='eight': must be a number"),
        ({"mask_mpp": 0}, r"tissue\.mask_mpp=0\.0: must be a positive"),
        ({"detect_pen": "yes"}, r"tissue\.detect_pen='yes': must be true or false"),
        ({"threshold_method": "triangle"}, r"tissue\.threshold_method='triangle'"),
        ({"min_saturation": 1.5}, r"tissue\.min_saturation=1\.5: must be a saturation"),
        ({"min_saturation": 0.3, "max_saturation": 0.2}, r"tissue\.min_saturation=0\.3: must not exceed"),
        ({"min_tissue_area_um2": -1}, r"tissue\.min_tissue_area_um2=-1\.0: must be a non-negative"),
        ({"blue_hue_deg": [250, 180]}, r"tissue\.blue_hue_deg=\(250\.0, 180\.0\)"),
        ({"blue_hue_deg": 200}, r"tissue\.blue_hue_deg=200: must be a pair"),
        ({"black_max_value": 300}, r"tissue\.black_max_value=300: must be an 8-bit"),
        ({"black_max_value": 1.5}, r"tissue\.black_max_value=1\.5: must be an integer"),
    ],
)
def test_from_dict_names_the_bad_key(d, message):
    with pytest.raises(ConfigurationError, match=message):
        TissueParams.from_dict(d)


def test_pixel_sizes_convert_microns_at_the_given_mpp():
    params = TissueParams()
    at8 = pixel_sizes(params, 8.0)             # 64 µm² per pixel
    assert at8.min_tissue_px == 781            # 50,000 / 64
    assert at8.max_hole_px == 312              # 20,000 / 64
    assert at8.min_pen_px == 78                # 5,000 / 64
    assert at8.closing_radius_px == 2          # 16 / 8
    assert at8.pen_dilation_px == 3            # 24 / 8
    at4 = pixel_sizes(params, 4.0)
    assert at4.min_tissue_px == 3125 and at4.closing_radius_px == 4
    with pytest.raises(ValueError, match="mpp"):
        pixel_sizes(params, 0.0)
