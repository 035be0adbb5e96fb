"""Errors of the review server: members of the project's one exception family."""

from __future__ import annotations

from wsi_prognosis.errors import WsiPrognosisError


class ReviewError(WsiPrognosisError):
    """The review server cannot start or serve."""


class ReviewInputError(ReviewError):
    """The scores folder (or manifest) given to `review` is missing or not a score output."""


class PortInUseError(ReviewError):
    """The requested host:port is taken by another program."""
