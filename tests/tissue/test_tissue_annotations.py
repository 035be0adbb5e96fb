"""QuPath GeoJSON: every export flavour, MultiPolygon holes, bad files, polygons off the slide."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from wsi_prognosis.errors import AnnotationError
from wsi_prognosis.tissue import Polygon, annotation_mask, check_polygons_inside, read_qupath_geojson

SQUARE = [[100, 100], [500, 100], [500, 500], [100, 500], [100, 100]]      # closed ring, level 0
HOLE = [[200, 200], [400, 200], [400, 400], [200, 400], [200, 200]]
TRIANGLE = [[600, 100], [900, 100], [600, 400], [600, 100]]


def qupath_feature(geometry, name="Tumor", object_type="annotation"):
    """A Feature as QuPath 0.4 writes it."""
    return {
        "type": "Feature",
        "id": "3f1c6a0e-5b4e-4a0b-9a57-0d2f3c9e1a11",
        "geometry": geometry,
        "properties": {"objectType": object_type,
                       "classification": {"name": name, "color": [200, 0, 0]}},
    }


POLYGON = {"type": "Polygon", "coordinates": [SQUARE]}


def write(tmp_path, doc, name="a.geojson"):
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "doc",
    [
        {"type": "FeatureCollection", "features": [qupath_feature(POLYGON)]},   # "Export objects"
        qupath_feature(POLYGON),                                                 # one Feature
        POLYGON,                                                                 # bare geometry
        [qupath_feature(POLYGON)],                                               # QuPath 0.2 list
        {"type": "GeometryCollection", "geometries": [POLYGON]},
    ],
    ids=["FeatureCollection", "Feature", "geometry", "list", "GeometryCollection"],
)
def test_every_qupath_flavour_gives_the_same_polygon(tmp_path, doc):
    polygons = read_qupath_geojson(write(tmp_path, doc))
    assert len(polygons) == 1
    exterior, holes = polygons[0]
    assert exterior.dtype == np.float64 and exterior.shape == (5, 2)
    np.testing.assert_array_equal(exterior, SQUARE)
    assert holes == ()


def test_multipolygon_with_a_hole(tmp_path):
    geometry = {"type": "MultiPolygon", "coordinates": [[SQUARE, HOLE], [TRIANGLE]]}
    polygons = read_qupath_geojson(write(tmp_path, qupath_feature(geometry)))
    assert len(polygons) == 2
    assert len(polygons[0].holes) == 1 and polygons[1].holes == ()
    np.testing.assert_array_equal(polygons[0].holes[0], HOLE)
    # Mask at 1/100 scale (one mask pixel = 100 level-0 px): the square covers pixels
    # 1..4 in x and y (centres 150..450), the hole pixel centres 250 and 350 are cut out.
    mask = annotation_mask(polygons, shape=(10, 10), scale=0.01)
    expected = np.zeros((10, 10), bool)
    expected[1:5, 1:5] = True
    expected[2:4, 2:4] = False
    triangle = mask[:, 6:]
    mask_without_triangle = mask.copy()
    mask_without_triangle[:, 6:] = False
    np.testing.assert_array_equal(mask_without_triangle, expected)
    # The triangle (600,100)-(900,100)-(600,400), hypotenuse x + y = 1000: centres with
    # x + y < 1000 are inside ((650,150), (750,150), (650,250)); those on the hypotenuse
    # ((850,150), (750,250), (650,350)) count as inside too, as in skimage.draw.polygon.
    expected_triangle = np.zeros((10, 4), bool)
    expected_triangle[1, :3] = expected_triangle[2, :2] = expected_triangle[3, 0] = True
    np.testing.assert_array_equal(triangle, expected_triangle)


def test_coordinates_with_z_and_extra_properties_are_accepted(tmp_path):
    ring = [[x, y, 0.0] for x, y in SQUARE]
    doc = qupath_feature({"type": "Polygon", "coordinates": [ring]})
    doc["properties"]["measurements"] = {"Area": 1.0}
    (polygon,) = read_qupath_geojson(write(tmp_path, doc))
    np.testing.assert_array_equal(polygon.exterior, SQUARE)


def test_class_filter_and_detections(tmp_path, caplog):
    doc = {"type": "FeatureCollection", "features": [
        qupath_feature(POLYGON, name="Tumor"),
        qupath_feature({"type": "Polygon", "coordinates": [TRIANGLE]}, name="Stroma"),
        qupath_feature({"type": "Polygon", "coordinates": [HOLE]}, object_type="detection"),
        qupath_feature({"type": "Point", "coordinates": [10, 10]}),
    ]}
    path = write(tmp_path, doc)
    with caplog.at_level(logging.WARNING, logger="wsi_prognosis.tissue.annotations"):
        everything = read_qupath_geojson(path)
    assert len(everything) == 2                       # detection and point skipped...
    assert "detection objects" in caplog.text and "Point geometries" in caplog.text  # ...and said
    tumour = read_qupath_geojson(path, classes={"Tumor"})
    assert len(tumour) == 1
    np.testing.assert_array_equal(tumour[0].exterior, SQUARE)
    with pytest.raises(AnnotationError, match=r"no polygon annotation of class \['Necrosis'\]"):
        read_qupath_geojson(path, classes={"Necrosis"})


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"type": "FeatureCollection", "features": [', "not valid JSON"),
        ("", "not valid JSON"),
        ({"type": "FeatureCollection", "features": []}, "no polygon annotation"),
        ({"type": "Point", "coordinates": [1, 2]}, r"no polygon annotation \(found: Point geometries\)"),
        ({"type": "Circle", "coordinates": [1, 2]}, "unsupported geometry type 'Circle'"),
        ({"type": "Polygon", "coordinates": [[[0, 0], [1, 1]]]}, "needs >= 3 finite"),
        ({"type": "Polygon", "coordinates": [[[0, 0], [1, "a"], [2, 2]]]}, "ring"),
        ({"type": "Polygon"}, "list of rings"),
        ({"type": "FeatureCollection"}, "without a 'features' list"),
        ({"features": []}, "with a 'type'"),
        (42, "with a 'type'"),
    ],
)
def test_bad_files_raise_annotation_error_naming_the_file(tmp_path, content, message):
    path = write(tmp_path, content, name="bad.geojson")
    with pytest.raises(AnnotationError, match=message) as info:
        read_qupath_geojson(path)
    assert str(path) in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(AnnotationError, match="cannot read the annotation file") as info:
        read_qupath_geojson(tmp_path / "nope.geojson")
    assert "nope.geojson" in str(info.value)


def test_polygons_outside_the_slide_are_refused(tmp_path):
    inside = Polygon(np.array(SQUARE, float))
    partly = Polygon(np.array(SQUARE, float) + 400)        # crosses the right/bottom edge
    outside = Polygon(np.array(SQUARE, float) + 10_000)    # e.g. exported in another frame
    check_polygons_inside([inside, partly], 600, 600, "a.geojson")
    with pytest.raises(AnnotationError, match=r"a\.geojson: 1 of 2 polygon\(s\) lie entirely outside "
                                              r"the slide \(600 x 600 px"):
        check_polygons_inside([inside, outside], 600, 600, "a.geojson")
    negative = Polygon(np.array(SQUARE, float) - 1_000)
    with pytest.raises(AnnotationError, match="level-0 pixel coordinates"):
        check_polygons_inside([negative], 600, 600, "a.geojson")


def test_annotation_mask_literal_and_overlap():
    # Pixel (r, c) is inside when its centre ((c + 0.5) / scale, (r + 0.5) / scale) is.
    square = Polygon(np.array([[0, 0], [40, 0], [40, 40], [0, 40]], float))
    mask = annotation_mask([square], shape=(8, 8), scale=0.1)
    assert mask[:4, :4].all() and mask.sum() == 16
    # A hole cuts only its own polygon: a second polygon over the hole stays.
    ring = Polygon(np.array([[0, 0], [80, 0], [80, 80], [0, 80]], float),
                   holes=(np.array([[20, 20], [60, 20], [60, 60], [20, 60]], float),))
    assert annotation_mask([ring], shape=(8, 8), scale=0.1)[2:6, 2:6].sum() == 0
    both = annotation_mask([ring, square], shape=(8, 8), scale=0.1)
    assert both[2:4, 2:4].all() and not both[4:6, 4:6].any()
    # Clipped to the mask shape; an empty polygon list gives an empty mask.
    big = Polygon(np.array([[-100, -100], [1000, -100], [1000, 1000], [-100, 1000]], float))
    assert annotation_mask([big], shape=(5, 7), scale=0.1).all()
    assert not annotation_mask([], shape=(5, 7), scale=0.1).any()
    with pytest.raises(ValueError, match="scale"):
        annotation_mask([square], shape=(8, 8), scale=0)
