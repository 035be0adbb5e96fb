"""Small formatting helpers shared by report.html's writers (`report`, `study_report`).

A module of their own so the report modules import it, not each other: `report` builds the page
from `study_report`'s sections, and both need the same p-value text and figure markup. Threshold
text (`fmt_threshold`) is shared with the notes of `inputs` and the protocol's pages.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

import pandas as pd


def escape(value: Any) -> str:
    """`value` as HTML text."""
    return html.escape(str(value))


def fmt_p(p: float | None) -> str:
    """A p-value for a table: '–' when missing, '< 0.0001', 4 decimals below 0.01, else 3."""
    if p is None or pd.isna(p):
        return "–"
    return "< 0.0001" if p < 1e-4 else f"{p:.4f}" if p < 0.01 else f"{p:.3f}"


def p_text(p: float | None) -> str:
    """'p < 0.0001' or 'p = 0.0059'."""
    text = fmt_p(p)
    return f"p {text}" if text.startswith("<") else f"p = {text}"


#: decimals of a calibrated threshold in text for people; the JSON files keep the exact value
THRESHOLD_DECIMALS = 4


def fmt_threshold(value: float | None) -> str:
    """A risk-group threshold for people, with 4 decimals, never its 16-digit binary expansion.

    >>> fmt_threshold(0.41234567890123456)
    '0.4123'
    """
    return "–" if value is None else f"{float(value):.{THRESHOLD_DECIMALS}f}"


def figure_html(path: Path, caption: str) -> str:
    """A PNG embedded as base64 in a <figure> with its caption (the page stays one file)."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return (f'<figure><img alt="{escape(caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{escape(caption)}</figcaption></figure>")


__all__ = ["escape", "fmt_p", "p_text", "fmt_threshold", "figure_html", "THRESHOLD_DECIMALS"]
