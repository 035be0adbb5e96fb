"""Write an AnalysisResult to a folder: summary.json, at_risk.csv, CSV tables, figures, report.html.

Every file is written atomically (temporary name, then rename).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pandas as pd

from wsi_prognosis.atomic import atomic_path, write_text_atomic
from wsi_prognosis.survival.km import GROUP_LABELS, plot_km, save_figure
from wsi_prognosis.survival.markers import marker_strings
from wsi_prognosis.survival.report import fmt_hr, p_text, render_report
from wsi_prognosis.survival.study_report import write_study_figures

AT_RISK_CSV_COLUMNS = ["cohort", "group", "time", "at_risk", "events"]
TABLES = ("cohorts", "groups", "km", "cox", "logrank", "concordance", "ph", "excluded", "unmatched", "patients")


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)) or "cohort"


def _json_safe(value):
    """Replace NaN/inf by None recursively so summary.json is strict JSON (allow_nan=False)."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # numpy scalars
        return _json_safe(value.item())
    return value


def _write_csv(df: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)


def summary_json(summary: dict) -> str:
    return json.dumps(_json_safe(summary), indent=2, allow_nan=False) + "\n"


def _plain_text(html_text: str) -> str:
    return re.sub(r"<[^>]+>", "", html_text)


def write_figures(result, out_dir: Path) -> dict[str, list[tuple[Path, str]]]:
    """Per cohort: km_<cohort>.png/.pdf for the risk groups, km_<cohort>_<marker>.png/.pdf for the marker."""
    config, s = result.config, result.summary
    fig_dir = out_dir / "figures"
    figures: dict[str, list[tuple[Path, str]]] = {}
    for name, c in s["cohorts"].items():
        df = result.patients[result.patients["cohort"] == name]
        hr = c["hr"]["poor_vs_good"]
        note = f"Log-rank {p_text(c['logrank_p'])}" if c["logrank_p"] is not None else "Log-rank: not estimable"
        if hr.get("hr") is not None:
            note += f"\nHR poor vs good {_plain_text(fmt_hr(hr)).split(', p')[0]}"
        fig = plot_km(df, "risk_group", times=config.time_points, time_unit=config.time_unit,
                      confidence_bands=config.confidence_bands, ylabel=config.endpoint,
                      title=f"{name} cohort (n={c['n']}, {c['events']} events)", annotation=note,
                      levels=["good", "uncertain", "poor"], labels=GROUP_LABELS, alpha=config.alpha)
        stem = fig_dir / f"km_{_safe(name)}"
        save_figure(fig, stem)
        figures[name] = [(Path(f"{stem}.png"), f"{name}: Kaplan–Meier by risk group")]
        marker = result.markers.get(name) or {}
        if marker.get("levels"):
            column = marker["column"]
            values = marker_strings(df[column])
            sub = df.assign(**{column: values})[values.isin(marker["levels"]).fillna(False)]
            m = c["reference_marker"]
            fig = plot_km(sub, column, times=config.time_points, time_unit=config.time_unit,
                          confidence_bands=config.confidence_bands, ylabel=config.endpoint,
                          title=f"{name} cohort by {column} (n={len(sub)})", levels=marker["levels"],
                          labels=marker["labels"], annotation=f"Log-rank {p_text(m.get('logrank_p'))}", alpha=config.alpha)
            stem = fig_dir / f"km_{_safe(name)}_{_safe(column)}"
            save_figure(fig, stem)
            figures[name].append((Path(f"{stem}.png"), f"{name}: Kaplan–Meier by {column} (reference marker)"))
    return figures


def write_analysis(result, out_dir: str | Path) -> dict[str, Path]:
    """Write every output of the analysis into `out_dir`; return {label: path}."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    write_text_atomic(out_dir / "summary.json", summary_json(result.summary))
    paths["summary"] = out_dir / "summary.json"
    risk = result.at_risk[result.at_risk["marker"] == "risk_group"] if not result.at_risk.empty else result.at_risk
    _write_csv(risk.reindex(columns=AT_RISK_CSV_COLUMNS), out_dir / "at_risk.csv")
    paths["at_risk"] = out_dir / "at_risk.csv"
    if not result.at_risk.empty:
        markers = result.at_risk[result.at_risk["marker"] != "risk_group"]
        _write_csv(markers, out_dir / "at_risk_reference_marker.csv")
        paths["at_risk_reference_marker"] = out_dir / "at_risk_reference_marker.csv"
    tables_dir = out_dir / "tables"
    for name in TABLES:
        _write_csv(getattr(result, name), tables_dir / f"{name}.csv")
        paths[name] = tables_dir / f"{name}.csv"
    for name, table in result.extra.items():  # landmarks, discrimination, pooled (survival.evidence)
        _write_csv(table, tables_dir / f"{name}.csv")
        paths[name] = tables_dir / f"{name}.csv"
    figures = write_figures(result, out_dir)
    figures.update(write_study_figures(result, out_dir))  # forest plot of the pooled analysis
    write_text_atomic(out_dir / "report.html", render_report(result, figures))
    paths["report"] = out_dir / "report.html"
    return paths
