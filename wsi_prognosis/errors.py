"""One exception family for the whole project.

Every message names the file (or config key), the problem and the fix, so a user can act
on it without reading code. Batch stages catch `WsiPrognosisError` per slide, record
`str(exc)` in their summary and go on.
"""

from __future__ import annotations


class WsiPrognosisError(Exception):
    """Base class of every error this project raises on purpose."""


class ConfigurationError(WsiPrognosisError):
    """A configuration value is missing, of the wrong type or out of range."""


class ManifestError(WsiPrognosisError):
    """manifest.csv is unreadable or breaks its contract (columns, duplicate ids)."""


class ClinicalError(WsiPrognosisError):
    """clinical.csv is unreadable or breaks its contract."""


class SlideError(WsiPrognosisError):
    """A slide cannot be used. Subclasses say why."""


class SlideOpenError(SlideError):
    """The file does not exist or no reader recognises it."""


class SlideReadError(SlideError):
    """The slide opened but its pixels cannot be read."""


class MppMissingError(SlideError):
    """No microns-per-pixel value could be found for a slide."""


class ResolutionError(SlideError):
    """The slide cannot serve a requested resolution (e.g. 40x from a 20x scan)."""


class AnnotationError(WsiPrognosisError):
    """An annotation file (QuPath GeoJSON) does not parse or does not fit the slide."""


class TileStoreError(WsiPrognosisError):
    """A tiles/<slide_id>.h5 file is missing, incomplete or stale."""


class FingerprintMismatchError(TileStoreError):
    """The slide changed since it was tiled."""


class BundleError(WsiPrognosisError):
    """A model bundle is incomplete, tampered with or incompatible."""


class TrainingError(WsiPrognosisError):
    """Training cannot start or continue (e.g. no poor-prognosis cases)."""


class ProtocolError(WsiPrognosisError):
    """A validation protocol cannot be written, is not intact, or does not fit the run (wrong bundle)."""


class EncoderError(WsiPrognosisError):
    """An encoder cannot be built: unknown name, weights absent, changed or of another architecture."""


class FeatureStoreError(WsiPrognosisError):
    """A features/<encoder>/<slide_id>.h5 file is missing, incomplete or unreadable."""


class FeatureStoreMismatchError(FeatureStoreError):
    """A feature store was made with another encoder, weights, preprocessing or tile store."""
