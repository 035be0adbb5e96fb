"""wsi-prognosis: DoMore-style slide-level prognosis from H&E whole-slide images."""

__version__ = "0.1.0"
