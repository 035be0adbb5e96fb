"""Tissue segmentation, pen and blur QC, and tumour annotations: pure functions on arrays.

No slide I/O here (no openslide, h5py or torch): callers read a thumbnail or tiles and pass
numpy arrays in; everything physical is in microns and converted with the image's MPP.
"""

from wsi_prognosis.tissue.annotations import (
    Polygon,
    annotation_mask,
    check_polygons_inside,
    read_qupath_geojson,
)
from wsi_prognosis.tissue.blur import (
    BLUR_REFERENCE_MPP,
    BLUR_WARNING_THRESHOLD,
    blur_score,
    laplacian_variance,
)
from wsi_prognosis.tissue.color import hue_deg, saturation_u8, to_gray
from wsi_prognosis.tissue.mask import (
    TissueMask,
    saturation_threshold,
    tissue_fraction_per_tile,
    tissue_mask,
)
from wsi_prognosis.tissue.params import PixelSizes, TissueParams, pixel_sizes
from wsi_prognosis.tissue.pen import pen_colour_mask, pen_mask
from wsi_prognosis.tissue.qc import qc_thumbnail, save_png

__all__ = [
    "BLUR_REFERENCE_MPP",
    "BLUR_WARNING_THRESHOLD",
    "PixelSizes",
    "Polygon",
    "TissueMask",
    "TissueParams",
    "annotation_mask",
    "blur_score",
    "check_polygons_inside",
    "hue_deg",
    "laplacian_variance",
    "pen_colour_mask",
    "pen_mask",
    "pixel_sizes",
    "qc_thumbnail",
    "read_qupath_geojson",
    "save_png",
    "saturation_threshold",
    "saturation_u8",
    "tissue_fraction_per_tile",
    "tissue_mask",
    "to_gray",
]
