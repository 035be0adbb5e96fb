"""The batch page's view of the index: filters, sort and page from the query string, and neighbours.

Pure functions on `SlideEntry` lists, shared by the batch page and the viewer's previous / next
links, so both agree on "the current filter". A query string never raises.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from wsi_prognosis.review.entry import SlideEntry

SORT_KEYS = ("slide_id", "patient_id", "cohort", "score", "risk_group", "n_tiles_10x", "n_tiles_40x", "spread",
             "status", "qc")


@dataclass(frozen=True)
class Query:
    """The batch page's current view: filters, sort and page (all from the query string)."""

    group: str = ""
    cohort: str = ""
    status: str = ""
    q: str = ""
    sort: str = ""
    desc: bool = False
    page: int = 1
    per_page: int = 100

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> Query:
        """Unknown or malformed values fall back to the defaults (a query string never raises)."""
        def text(key: str) -> str:
            return str(params.get(key, "") or "")[:200]

        sort = text("sort")
        try:
            page = max(1, min(int(text("page") or 1), 1_000_000))
        except ValueError:
            page = 1
        try:
            per_page = max(10, min(int(text("per_page") or 100), 1000))
        except ValueError:
            per_page = 100
        return cls(group=text("group"), cohort=text("cohort"), status=text("status"), q=text("q").strip(),
                   sort=sort if sort in SORT_KEYS else "", desc=text("desc") in {"1", "true", "yes"}, page=page,
                   per_page=per_page)

    def params(self, **changes: Any) -> dict[str, str]:
        """Query-string parameters of this view (defaults left out), with `changes` applied."""
        values = {"group": self.group, "cohort": self.cohort, "status": self.status, "q": self.q, "sort": self.sort,
                  "desc": "1" if self.desc else "", "page": "" if self.page == 1 else str(self.page),
                  "per_page": "" if self.per_page == 100 else str(self.per_page)}
        values.update({k: ("" if v is None else str(v)) for k, v in changes.items()})
        return {k: v for k, v in values.items() if v}

    def filters(self) -> dict[str, str]:
        """Only the filter and sort parameters (what the viewer's previous / next follow)."""
        return {k: v for k, v in self.params(page="", per_page="").items()}


def select(entries: Sequence[SlideEntry], query: Query) -> list[SlideEntry]:
    """Entries passing the filters, sorted (missing values last either way; ties keep scores.csv order)."""
    needle = query.q.lower()
    out = []
    for e in entries:
        if query.group and (e.risk_group or "none") != query.group:
            continue
        if query.cohort and e.cohort != query.cohort:
            continue
        if query.status and e.status != query.status:
            continue
        if needle and not any(needle in s.lower() for s in (e.slide_id, e.patient_id, e.cohort, e.error)):
            continue
        out.append(e)
    if query.sort:
        present = [e for e in out if e.sort_value(query.sort) is not None]
        absent = [e for e in out if e.sort_value(query.sort) is None]
        present.sort(key=lambda e: e.sort_value(query.sort), reverse=query.desc)
        out = present + absent
    return out


def page_of(selected: Sequence[SlideEntry], query: Query) -> tuple[list[SlideEntry], int, int]:
    """(rows of the query's page, that page number clamped to the range, number of pages)."""
    pages = max(1, -(-len(selected) // query.per_page))
    page = min(query.page, pages)
    start = (page - 1) * query.per_page
    return list(selected[start:start + query.per_page]), page, pages


def neighbours(selected: Sequence[SlideEntry], slide_id: str) -> tuple[SlideEntry | None, SlideEntry | None, int]:
    """(previous, next, 1-based position) of `slide_id` in the selection; position 0 when not in it."""
    for i, e in enumerate(selected):
        if e.slide_id == slide_id:
            return (selected[i - 1] if i > 0 else None, selected[i + 1] if i + 1 < len(selected) else None, i + 1)
    return None, None, 0


__all__ = ["SORT_KEYS", "Query", "select", "page_of", "neighbours"]
