"""Open slides, resolve their MPP (with an audit record), plan and read pixels."""

from wsi_prognosis.slides.fingerprint import slide_fingerprint
from wsi_prognosis.slides.mpp import MppResolution, resolve_mpp
from wsi_prognosis.slides.plan import ReadPlan, plan_read
from wsi_prognosis.slides.reader import TileReader
from wsi_prognosis.slides.slide import Slide

__all__ = ["MppResolution", "ReadPlan", "Slide", "TileReader", "plan_read", "resolve_mpp", "slide_fingerprint"]
