"""The batch index: pure filtering, sorting, paging and QC flags on hand-made entries."""

from __future__ import annotations

import math

from wsi_prognosis.review.index import Query, QcThresholds, SlideEntry, neighbours, page_of, qc_flags, select


def entry(slide_id: str, score: float | None, group: str = "", cohort: str = "test", status: str = "ok",
          members: dict | None = None) -> SlideEntry:
    return SlideEntry(slide_id=slide_id, patient_id="P" + slide_id, cohort=cohort, score=score, risk_group=group,
                      n_tiles={"10x": 1, "40x": 4}, status=status, error="" if status == "ok" else "boom",
                      members=members or {})


ENTRIES = [entry("a", 0.2, "good"), entry("b", 0.9, "poor", cohort="validation"), entry("c", None, status="failed"),
           entry("d", 0.5, "uncertain", members={"m1": 0.1, "m2": 0.7}), entry("e", 0.8, "poor")]


def ids(entries) -> list[str]:
    return [e.slide_id for e in entries]


def test_filters_combine_and_search_is_case_insensitive() -> None:
    assert ids(select(ENTRIES, Query(group="poor"))) == ["b", "e"]
    assert ids(select(ENTRIES, Query(group="poor", cohort="validation"))) == ["b"]
    assert ids(select(ENTRIES, Query(group="none"))) == ["c"]          # no risk group (failed / uncalibrated)
    assert ids(select(ENTRIES, Query(status="failed"))) == ["c"]
    assert ids(select(ENTRIES, Query(q="BOOM"))) == ["c"]              # the error text is searched too
    assert ids(select(ENTRIES, Query(q="Pd"))) == ["d"]


def test_sort_keeps_missing_values_last_both_ways() -> None:
    assert ids(select(ENTRIES, Query(sort="score"))) == ["a", "d", "e", "b", "c"]
    assert ids(select(ENTRIES, Query(sort="score", desc=True))) == ["b", "e", "d", "a", "c"]
    assert ids(select(ENTRIES, Query(sort="spread", desc=True)))[0] == "d"
    assert math.isclose(ENTRIES[3].spread, 0.6)


def test_query_from_untrusted_parameters_never_raises() -> None:
    q = Query.from_params({"page": "-4", "per_page": "1e9", "sort": "__dict__", "desc": "yes", "q": " x " * 500})
    assert q.page == 1 and q.per_page == 100 and q.sort == "" and q.desc and len(q.q) <= 200
    assert Query.from_params({"per_page": "5"}).per_page == 10
    assert Query(group="poor", page=3).params(page=4) == {"group": "poor", "page": "4"}
    assert Query(group="poor", page=3, sort="score").filters() == {"group": "poor", "sort": "score"}


def test_pages_clamp_and_neighbours_follow_the_selection() -> None:
    rows, page, pages = page_of(ENTRIES, Query(page=99, per_page=10))
    assert (ids(rows), page, pages) == (ids(ENTRIES), 1, 1)
    poor = select(ENTRIES, Query(group="poor"))
    previous, following, position = neighbours(poor, "e")
    assert previous.slide_id == "b" and following is None and position == 2
    assert neighbours(poor, "a") == (None, None, 0)


def test_qc_flags_from_the_tile_store_record() -> None:
    limits = QcThresholds(blur_below=300, pen_above=0.05, little_tissue_mm2=1.0)
    assert qc_flags({"blur": 120.0, "pen_fraction": 0.2, "tissue_mm2": 0.5}, limits) == ["blur", "pen", "little tissue"]
    assert qc_flags({"blur": 900.0, "pen_fraction": 0.0, "tissue_mm2": 40.0}, limits) == []
    assert qc_flags({"blur": None, "pen_fraction": float("nan")}, limits) == []
