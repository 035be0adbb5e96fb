"""Kaplan–Meier curves per group: tidy tables, the number-at-risk table and the figure.

The at-risk table follows the DoMore slide, `Good prognosis 704 (13) 659 (29) 492 (15) 71 (0) 1`:
at each time point t_i the patients still at risk (time >= t_i), and in brackets the events in
[t_i, t_{i+1}). The last time point has no following interval, so its events are blank (NA).
With these half-open intervals, at_risk(t_{i+1}) = at_risk(t_i) - events_i - censored_i.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from lifelines import KaplanMeierFitter  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from wsi_prognosis.survival.inputs import RISK_GROUPS  # noqa: E402

KM_COLUMNS = ["group", "time", "at_risk", "events", "censored", "survival", "ci_low", "ci_high"]
AT_RISK_COLUMNS = ["group", "time", "at_risk", "events"]
GROUP_COLORS = {"good": "#1a9641", "uncertain": "#e6a100", "poor": "#d7191c"}
GROUP_LABELS = {"good": "Good prognosis", "uncertain": "Uncertain prognosis", "poor": "Poor prognosis"}
_PALETTE = ["#1b9e77", "#7570b3", "#d95f02", "#e7298a", "#66a61e", "#a6761d", "#666666"]  # ColorBrewer Dark2


def group_levels(df: pd.DataFrame, group: str) -> list:
    """Groups in display order: good, uncertain, poor for risk groups; sorted values otherwise."""
    values = df[group].dropna().unique().tolist()
    if set(values) <= set(RISK_GROUPS):
        return [g for g in RISK_GROUPS if g in values or group == "risk_group"]
    try:
        return sorted(values, key=float)
    except (TypeError, ValueError):
        return sorted(values, key=str)


def km_table(
    df: pd.DataFrame, group: str = "risk_group", *, levels: Sequence | None = None,
    time: str = "time", event: str = "event", alpha: float = 0.05,
) -> pd.DataFrame:
    """The Kaplan–Meier estimate per group as a tidy table, one row per distinct time (plus 0).

    Columns: group, time, at_risk (just before time), events, censored (at time), survival
    (S(time), right-continuous), ci_low, ci_high (exponential Greenwood, 1 - alpha).
    A group with no members gives no rows.
    """
    rows = []
    for level in (list(levels) if levels is not None else group_levels(df, group)):
        sub = df[df[group] == level]
        if sub.empty:
            continue
        kmf = KaplanMeierFitter(alpha=alpha).fit(sub[time], sub[event], label=str(level))
        table = kmf.event_table
        ci = kmf.confidence_interval_survival_function_
        sf = kmf.survival_function_.iloc[:, 0]
        rows.append(pd.DataFrame({
            "group": level,
            "time": table.index.to_numpy(dtype=float),
            "at_risk": table["at_risk"].to_numpy(dtype=int),
            "events": table["observed"].to_numpy(dtype=int),
            "censored": table["censored"].to_numpy(dtype=int),
            "survival": sf.reindex(table.index).to_numpy(dtype=float),
            "ci_low": ci.iloc[:, 0].reindex(table.index).to_numpy(dtype=float),
            "ci_high": ci.iloc[:, 1].reindex(table.index).to_numpy(dtype=float),
        }))
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=KM_COLUMNS)


def at_risk_table(
    df: pd.DataFrame,
    times: Sequence[float],
    group: str = "risk_group",
    *,
    levels: Sequence | None = None,
    time: str = "time",
    event: str = "event",
) -> pd.DataFrame:
    """Number at risk at each time point and events in [t_i, t_{i+1}) per group (tidy).

    Groups with no members are kept with zeros, so the table under a figure always has every row.
    `events` is NA at the last time point (no following interval), as in the DoMore slide.
    """
    times = [float(t) for t in times]
    rows = []
    for level in (list(levels) if levels is not None else group_levels(df, group)):
        sub = df[df[group] == level]
        t = sub[time].to_numpy(dtype=float)
        e = sub[event].to_numpy(dtype=int)
        for i, start in enumerate(times):
            at_risk = int((t >= start).sum())
            if i + 1 < len(times):
                events: int | None = int(((t >= start) & (t < times[i + 1]) & (e == 1)).sum())
            else:
                events = None
            rows.append({"group": level, "time": start, "at_risk": at_risk, "events": events})
    out = pd.DataFrame(rows, columns=AT_RISK_COLUMNS)
    out["events"] = out["events"].astype("Int64")
    return out


def _style(level, index: int, labels: dict | None = None) -> tuple[str, str]:
    color = GROUP_COLORS.get(str(level), _PALETTE[index % len(_PALETTE)])
    label = (labels or {}).get(level, GROUP_LABELS.get(str(level), str(level)))
    return color, label


def plot_km(
    df: pd.DataFrame,
    group: str = "risk_group",
    *,
    times: Sequence[float] = (0, 2, 4, 6, 8),
    time_unit: str = "years",
    confidence_bands: bool = False,
    title: str | None = None,
    ylabel: str = "Cancer-specific survival",
    group_label: str | None = None,
    labels: dict | None = None,
    levels: Sequence | None = None,
    annotation: str | None = None,
    time: str = "time",
    event: str = "event",
    alpha: float = 0.05,
) -> Figure:
    """Kaplan–Meier curves per group with the number-at-risk (events) table aligned under the ticks.

    Returns a new Figure (main axes first in `fig.axes`, the at-risk table second). The x axis
    runs from 0 to the last time point; censored patients are marked with '|'. `levels` fixes the
    order of the groups (default: good, uncertain, poor or sorted values); `labels` maps a level
    to its legend/table label.
    """
    levels = list(levels) if levels is not None else group_levels(df, group)
    n_rows = max(len(levels), 1)
    fig = plt.figure(figsize=(7.0, 4.6 + 0.28 * n_rows))
    grid = fig.add_gridspec(2, 1, height_ratios=[4.2, 0.42 + 0.3 * n_rows], hspace=0.34)
    ax = fig.add_subplot(grid[0])
    table_ax = fig.add_subplot(grid[1], sharex=ax)
    t_max = float(max(times))
    for i, level in enumerate(levels):
        sub = df[df[group] == level]
        color, label = _style(level, i, labels)
        if sub.empty:
            ax.plot([], [], color=color, label=f"{label} (n=0)")
            continue
        kmf = KaplanMeierFitter(alpha=alpha).fit(sub[time], sub[event])
        sf = kmf.survival_function_.iloc[:, 0]
        ax.step(sf.index, sf.to_numpy(), where="post", color=color, lw=1.8,
                label=f"{label} (n={len(sub)})")
        censored = sub.loc[(sub[event] == 0) & (sub[time] <= t_max), time].to_numpy(dtype=float)
        if censored.size:
            ax.plot(censored, kmf.survival_function_at_times(censored).to_numpy(), ls="none",
                    marker="|", ms=6, mew=1.0, color=color)
        if confidence_bands:
            ci = kmf.confidence_interval_survival_function_
            ax.fill_between(ci.index, ci.iloc[:, 0], ci.iloc[:, 1], step="post", color=color, alpha=0.15, lw=0)
    ax.set_xlim(0, t_max * 1.02 if t_max > 0 else 1)
    ax.set_ylim(0, 1.02)
    ax.set_xticks(list(times))
    ax.set_xticklabels([f"{t:g}" for t in times])
    ax.set_xlabel(f"Time ({time_unit})")
    ax.set_ylabel(ylabel)
    ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0, decimals=0))
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(axis="y", color="0.9", lw=0.6)
    ax.legend(loc="lower left", frameon=False, fontsize=9, title=group_label, title_fontsize=9)
    if annotation:
        ax.text(0.98, 0.04, annotation, transform=ax.transAxes, ha="right", va="bottom", fontsize=9)
    if title:
        ax.set_title(title, fontsize=11, loc="left")

    table = at_risk_table(df, times, group, levels=levels, time=time, event=event)
    table_ax.set_ylim(-0.5, n_rows - 0.5)
    table_ax.axis("off")
    table_ax.set_title("Number at risk (events in interval)", fontsize=8.5, loc="left", color="0.25", pad=3)
    for i, level in enumerate(levels):
        y = n_rows - 1 - i
        color, label = _style(level, i, labels)
        # axes-fraction x, clear of the first (centred) count at t = 0
        table_ax.text(-0.085, y, label, transform=table_ax.get_yaxis_transform(), ha="right",
                      va="center", fontsize=8.5, color=color, fontweight="bold")
        for row in table[table["group"] == level].itertuples():
            text = f"{row.at_risk}" if pd.isna(row.events) else f"{row.at_risk} ({row.events})"
            table_ax.text(row.time, y, text, ha="center", va="center", fontsize=8.5)
    fig.subplots_adjust(left=0.28, right=0.96, top=0.93 if title else 0.97, bottom=0.04)
    return fig


def save_figure(fig: Figure, stem) -> list[str]:
    """Write `stem`.png (200 dpi) and `stem`.pdf; close the figure; return the paths."""
    from wsi_prognosis.atomic import atomic_path

    paths = []
    for suffix, kwargs in ((".png", {"dpi": 200}), (".pdf", {})):
        final = f"{stem}{suffix}"
        with atomic_path(final) as tmp:
            fig.savefig(tmp, format=suffix[1:], **kwargs)
        paths.append(final)
    plt.close(fig)
    return paths


__all__ = ["km_table", "at_risk_table", "plot_km", "save_figure", "group_levels"]
