#!/usr/bin/env python
"""Learning benchmark: does the recipe learn real morphology, and do its groups survive a shift?

For each planted signal kind (`wsi_prognosis.synth.realtex`: nuclear 40x, architecture 10x,
immune 10x, stroma 10x) it builds a cohort on real H&E texture (training / tuning / test = other
block of the training patients / validation = another site with a stain, blur and JPEG shift),
then runs the real stages exactly as a user types them: tile -> train sweep -> select ->
calibrate -> score -> analyze. It prints, per signal and cohort: ensemble C, oracle C (true
risk), grade C, best / median member C per resolution, shares, HR poor vs good, and the
validation shares against the tuning shares; `--sizes 100,200,400` adds a learning curve.

    .venv/bin/python scripts/bench_learning.py                      # all four signals, 200 training patients
    .venv/bin/python scripts/bench_learning.py --signals nuclear --sizes 100,200,400
    .venv/bin/python scripts/bench_learning.py --recipe cox --train model.loss=cox   # one ablation row
    .venv/bin/python scripts/bench_learning.py --ablation        # every recipe and seed run so far, one table

Cohorts and tiles are kept in --out/cohorts and reused by every recipe; each recipe's runs live
in --out/<recipe>/. Results: --out/<recipe>/results.csv (one row per signal, size, seed, cohort;
a rerun replaces its own rows) and results.json; `--ablation` writes --out/ablation.csv. Up to ~45 minutes on 2 cores for the defaults; progress is printed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from wsi_prognosis.survival import concordance  # noqa: E402
from wsi_prognosis.synth.realtex import SIGNALS, RealTexConfig, make_realtex_cohort  # noqa: E402

TILE_OVERRIDES = ["tissue.mask_mpp=4", "tissue.min_tissue_area_um2=5000"]  # small slides: a finer mask


def stage(args: list[str], log: Path) -> None:
    """Run one `wsi-prognosis` stage as a user would; its output goes to `log`."""
    started = time.monotonic()
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as handle:
        handle.write(f"\n$ wsi-prognosis {' '.join(args)}\n")
        handle.flush()
        code = subprocess.call([sys.executable, "-m", "wsi_prognosis.cli", *args], stdout=handle,
                               stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if code != 0:
        raise SystemExit(f"stage failed (exit {code}): wsi-prognosis {' '.join(args)}; see {log}")
    print(f"    {args[0]}: {time.monotonic() - started:.0f} s", flush=True)


def c_index(frame: pd.DataFrame, column: str) -> float:
    frame = frame.dropna(subset=[column])
    if frame["event"].sum() == 0 or len(frame) < 3:
        return float("nan")
    return float(concordance(frame["time"].to_numpy(), frame["event"].to_numpy(), frame[column].to_numpy()))


def cohort_metrics(scores_dir: Path, cohort_dir: Path, analysis_dir: Path) -> list[dict]:
    """Per cohort: ensemble / oracle / grade / member C, shares and HR poor vs good."""
    slides = pd.read_csv(scores_dir / "scores.csv", dtype={"patient_id": str})
    patients = pd.read_csv(scores_dir / "patient_scores.csv", dtype={"patient_id": str})
    clinical = pd.read_csv(cohort_dir / "clinical.csv", dtype={"patient_id": str})
    truth = pd.read_csv(cohort_dir / "truth.csv", dtype={"patient_id": str})
    summary = json.loads((analysis_dir / "summary.json").read_text())
    members = [c for c in slides.columns if c.startswith("member_")]
    per_patient_members = (slides[slides["status"] == "ok"].groupby(["cohort", "patient_id"])[members].mean()
                           .reset_index())
    rows = []
    for cohort, frame in patients.groupby("cohort"):
        frame = frame.merge(clinical, on="patient_id").merge(truth, on="patient_id")
        frame = frame.merge(per_patient_members[per_patient_members["cohort"] == cohort].drop(columns="cohort"),
                            on="patient_id", how="left")
        row = {"cohort": cohort, "n": len(frame), "events": int(frame["event"].sum()),
               "c_ensemble": c_index(frame, "score"), "c_oracle": c_index(frame, "risk"),
               "c_grade": c_index(frame, "grade")}
        for res in ("10x", "40x"):
            cs = [c_index(frame, m) for m in members if m.startswith(f"member_{res}")]
            cs = [c for c in cs if not np.isnan(c)]
            row[f"c_best_{res}"] = max(cs) if cs else float("nan")
            row[f"c_median_{res}"] = float(np.median(cs)) if cs else float("nan")
        all_members = [c_index(frame, m) for m in members]
        row["c_median_member"] = float(np.nanmedian(all_members)) if members else float("nan")
        shares = frame["risk_group"].value_counts(normalize=True)
        for group in ("good", "uncertain", "poor"):
            row[f"share_{group}"] = float(shares.get(group, 0.0))
        hr = ((summary["cohorts"].get(cohort) or {}).get("hr") or {}).get("poor_vs_good") or {}
        row.update(hr_poor=hr.get("hr"), hr_low=hr.get("ci_low"), hr_high=hr.get("ci_high"))
        row["score_iqr"] = float(frame["score"].quantile(0.75) - frame["score"].quantile(0.25))
        rows.append(row)
    return rows


def run_signal(signal: str, n_train: int, args: argparse.Namespace) -> list[dict]:
    out = Path(args.out)
    name = f"{signal}_n{n_train}_s{args.seed}"
    tile_overrides = [*TILE_OVERRIDES, *args.tile]
    tag = "" if not args.tile else "_" + hashlib.sha1(" ".join(args.tile).encode()).hexdigest()[:6]
    cohort_dir, tiles = out / "cohorts" / name, out / "cohorts" / f"{name}_tiles{tag}"
    work = out / args.recipe / name
    log = work / "stages.log"
    started = time.monotonic()
    print(f"[{signal}, {n_train} training patients, recipe {args.recipe}] -> {work}", flush=True)
    make_realtex_cohort(cohort_dir, RealTexConfig(
        texture_dir=str(REPO / "tests" / "data"), signal=signal, seed=args.seed, n_training=n_train,
        n_tuning=args.n_tuning, n_validation=args.n_validation, workers=args.workers))
    manifest, clinical = cohort_dir / "manifest.csv", cohort_dir / "clinical.csv"
    if not (tiles / "run_tile.json").is_file():
        stage(["tile", f"manifest={manifest}", f"out={tiles}", f"workers={args.workers}", *tile_overrides],
              out / "cohorts" / f"{name}_tile{tag}.log")
    runs, bundle, calibrated = work / "runs", work / "bundle", work / "bundle_calibrated"
    scores, analysis = work / "scores", work / "analysis"
    seeds = ",".join(str(args.seed + i) for i in range(args.members))
    features: list[str] = []
    if args.encoder != "none":  # a frozen encoder: embed once per cohort and embed settings, shared by recipes
        etag = "" if not args.embed else "_" + hashlib.sha1(" ".join(args.embed).encode()).hexdigest()[:6]
        root = out / "cohorts" / f"{name}_features{tag}{etag}"
        embed_args = ["embed", f"tiles={tiles}", f"out={root}", f"manifest={manifest}", f"encoder={args.encoder}",
                      *args.embed]
        stage(embed_args, out / "cohorts" / f"{name}_embed{tag}{etag}.log")  # resumable: finished stores are skipped
        features = [f"features={root}"]
        rows_probe = probe_rows(cohort_dir, root, args)
    encoder = [f"encoder={args.encoder}"] if args.encoder != "none" else ["experiment=scratch_cpu"]
    if not (runs / "sweep_done.json").is_file():
        stage(["train", "--multirun", f"manifest={manifest}", f"clinical={clinical}", f"tiles={tiles}", f"out={runs}",
               f"resolution={args.resolutions}", f"seed={seeds}", *encoder, *features, *args.train], log)
        (runs / "sweep_done.json").write_text("{}\n")
    if not (bundle / "run_select.json").is_file():
        stage(["select", f"runs={runs}", f"out={bundle}", f"k={args.keep}", f"resolutions=[{args.resolutions}]",
               *args.select], log)
    if not (calibrated / "run_calibrate.json").is_file():
        stage(["calibrate", f"bundle={bundle}", f"manifest={manifest}", f"clinical={clinical}", f"tiles={tiles}",
               f"out={calibrated}", "engine.workers=0", *features], log)
    if not (scores / "run_score.json").is_file():
        stage(["score", f"bundle={calibrated}", f"manifest={manifest}", f"tiles={tiles}", f"out={scores}",
               "engine.workers=0", "exports.heatmap=false", "exports.geojson=false", *features], log)
    if not (analysis / "run_analyze.json").is_file():
        stage(["analyze", f"scores={scores / 'patient_scores.csv'}", f"clinical={clinical}", f"out={analysis}",
               "analysis.bootstrap.n=0"], log)
    rows = cohort_metrics(scores, cohort_dir, analysis)
    for row in rows:
        row.update(signal=signal, n_train=n_train, seed=args.seed, recipe=args.recipe,
                   minutes=round((time.monotonic() - started) / 60, 1))
        if args.encoder != "none":
            row.update({k: v.get(row["cohort"]) for k, v in rows_probe.items()})
    return rows


def probe_rows(cohort_dir: Path, root: Path, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """The simple baseline's C per cohort (scripts/bench_probe.py), per resolution embedded."""
    from bench_probe import probe

    found = {}
    # the feature set embed wrote: the encoder's name, plus "-macenko" with stain_norm=macenko
    feature_set = args.encoder + ("-macenko" if "stain_norm=macenko" in args.embed else "")
    for res in args.resolutions.split(","):
        try:
            found[f"c_probe_{res}"] = probe(cohort_dir, root, feature_set, res)
        except Exception as exc:  # noqa: BLE001 - e.g. no 10x tiles: the row says so, the benchmark goes on
            print(f"    probe {res}: not computed ({exc})", flush=True)
    return found


KEY = ["signal", "n_train", "seed", "cohort"]


def save_results(target: Path, rows: pd.DataFrame) -> None:
    """Merge `rows` into target/results.csv (and .json): a rerun replaces its own signal, size and
    seed and keeps the recipe's other seeds, so one file holds every seed of a recipe."""
    path = target / "results.csv"
    if path.is_file():
        old = pd.read_csv(path)
        if "seed" in old:
            keep = ~old.set_index(KEY).index.isin(rows.set_index(KEY).index)
            rows = pd.concat([old[keep], rows], ignore_index=True)
    rows = rows.sort_values(KEY).reset_index(drop=True)
    rows.to_csv(path, index=False)
    (target / "results.json").write_text(rows.to_json(orient="records", indent=1))


MARGIN = {"nuclear": 0.05, "architecture": 0.05, "immune": 0.10, "stroma": 0.10}  # validation C >= oracle - margin


def target_checks(validation: pd.Series, tuning: pd.Series, signal: str) -> tuple[dict[str, bool], float]:
    """The validation targets for one run, and the largest share drift from tuning."""
    drift = max(abs(validation[f"share_{g}"] - tuning[f"share_{g}"]) for g in ("good", "uncertain", "poor"))
    hr_low = validation["hr_low"]
    probes = [validation[c] for c in validation.index if str(c).startswith("c_probe_") and not pd.isna(validation[c])]
    return {
        f"C>=oracle-{MARGIN[signal]:.2f}": validation["c_ensemble"] >= validation["c_oracle"] - MARGIN[signal],
        "HR CI>1": hr_low is not None and not pd.isna(hr_low) and hr_low > 1,
        "shares±10pp": drift <= 0.10,
        "ens>=baseline": bool(probes) and validation["c_ensemble"] >= max(probes),
        "ens>=median member": validation["c_ensemble"] >= validation["c_median_member"],
    }, drift


def ablation_table(out: Path) -> pd.DataFrame:
    """One row per recipe and signal, over every seed run: validation C (mean and per seed), its gap to
    oracle - margin, the baseline, share drift, HR's lower CI bound and how many of the five targets each seed met.
    Recomputed from each run's scores and analysis, so it never reads a stale results.csv."""
    records = []
    for run in sorted(out.glob("*/*_n*_s*")):
        if run.parent.name == "cohorts" or not (run / "analysis" / "summary.json").is_file():
            continue
        signal, n, seed = run.name.rsplit("_", 2)
        rows = pd.DataFrame(cohort_metrics(run / "scores", out / "cohorts" / run.name, run / "analysis")).set_index("cohort")
        if not {"validation", "tuning"} <= set(rows.index):
            continue
        results = run.parent / "results.csv"  # the baseline's C, computed when the recipe ran
        if results.is_file():
            saved = pd.read_csv(results)
            saved = saved[(saved["signal"] == signal) & (saved["seed"] == int(seed[1:])) & (saved["n_train"] == int(n[1:]))]
            for column in [c for c in saved.columns if c.startswith("c_probe_")]:
                rows[column] = saved.set_index("cohort")[column].reindex(rows.index)
        v = rows.loc["validation"]
        checks, drift = target_checks(v, rows.loc["tuning"], signal)
        probe = max([v[c] for c in v.index if str(c).startswith("c_probe_") and not pd.isna(v[c])], default=float("nan"))
        records.append({"recipe": run.parent.name, "signal": signal, "n_train": int(n[1:]), "seed": int(seed[1:]),
                        "val_c": v["c_ensemble"], "oracle": v["c_oracle"], "probe": probe,
                        "gap": v["c_ensemble"] - (v["c_oracle"] - MARGIN[signal]),
                        "drift_pp": 100 * drift, "hr_low": v["hr_low"], "targets": sum(checks.values())})
    table = pd.DataFrame(records)
    if table.empty:
        return table
    return (table.groupby(["signal", "n_train", "recipe"])
            .agg(seeds=("seed", lambda s: ",".join(map(str, sorted(s)))), val_c=("val_c", "mean"),
                 val_c_per_seed=("val_c", lambda c: " ".join(f"{x:.3f}" for x in c)),
                 oracle=("oracle", "mean"), probe=("probe", "mean"),
                 gap=("gap", "mean"), drift_pp=("drift_pp", "mean"), min_hr_low=("hr_low", "min"),
                 targets_per_seed=("targets", lambda t: " ".join(f"{x}/5" for x in t)))
            .reset_index())


def print_table(table: pd.DataFrame) -> None:
    cols = ["signal", "n_train", "cohort", "n", "c_ensemble", "c_oracle", "c_grade", "c_probe_40x", "c_probe_10x",
            "c_best_10x", "c_median_10x", "c_best_40x", "c_median_40x", "share_good", "share_uncertain", "share_poor", "hr_poor", "hr_low", "hr_high"]
    with pd.option_context("display.width", 250, "display.max_columns", 30, "display.float_format", "{:.3f}".format):
        print(table[[c for c in cols if c in table]].to_string(index=False))
    print("\nTargets (validation): C >= oracle - 0.05 (nuclear, architecture) or - 0.10 (immune, stroma); HR CI "
          "excludes 1; shares within 10 pp of tuning; ensemble C >= the mean-embedding Cox baseline and >= median member C.")
    for (signal, n), group in table.groupby(["signal", "n_train"]):
        by = group.set_index("cohort")
        if "validation" not in by.index or "tuning" not in by.index:
            continue
        checks, drift = target_checks(by.loc["validation"], by.loc["tuning"], signal)
        print(f"  {signal:13s} n={n}: " + "  ".join(f"{k} {'PASS' if ok else 'fail'}" for k, ok in checks.items())
              + f"  (max share drift {100 * drift:.0f} pp)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(REPO / "bench_out" / "learning"))
    parser.add_argument("--signals", default=",".join(SIGNALS), help=f"comma list of {SIGNALS}")
    parser.add_argument("--sizes", default="200", help="training-cohort sizes (a learning curve with several)")
    parser.add_argument("--curve-signal", default=None, help="signal for sizes other than the first (default: first signal)")
    parser.add_argument("--n-tuning", type=int, default=80)
    parser.add_argument("--n-validation", type=int, default=100)
    parser.add_argument("--members", type=int, default=8, help="candidates trained per resolution")
    parser.add_argument("--keep", type=int, default=5, help="members kept per resolution by select (DoMore: 5)")
    parser.add_argument("--encoder", default="lite0", help="frozen encoder (embedded once per cohort), or none: "
                        "from scratch on pixels (experiment=scratch_cpu; add --tile tiling.tile_px=64 as before)")
    parser.add_argument("--embed", action="append", default=[], help="extra embed override (repeatable; e.g. views=2), "
                        "features kept per override set")
    parser.add_argument("--resolutions", default="10x,40x",
                        help="member resolutions (e.g. 40x alone for a quick ablation of a 40x signal)")
    parser.add_argument("--recipe", default="default", help="name of this recipe (its own runs folder)")
    parser.add_argument("--train", action="append", default=[], help="extra train override (repeatable)")
    parser.add_argument("--select", action="append", default=[], help="extra select override (repeatable)")
    parser.add_argument("--tile", action="append", default=[],
                        help="extra tile override (repeatable; e.g. a 40x field of view), tiles kept per override set")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--ablation", action="store_true",
                        help="print the ablation table of every recipe and seed already run under --out, then stop")
    args = parser.parse_args()
    if args.ablation:
        table = ablation_table(Path(args.out))
        if table.empty:
            raise SystemExit(f"no finished benchmark run under {args.out}")
        table.to_csv(Path(args.out) / "ablation.csv", index=False)
        with pd.option_context("display.width", 250, "display.max_columns", 20, "display.float_format", "{:.3f}".format):
            print(table.to_string(index=False))
        print(f"\ngap = validation C - (oracle C - margin: 0.05 nuclear, architecture; 0.10 immune, stroma), >= 0 passes; probe = the mean-embedding Cox baseline; drift = largest validation share change from "
              f"tuning (<= 10 pp passes); targets = of the five per seed. Saved: {Path(args.out) / 'ablation.csv'}")
        return
    signals = [s for s in args.signals.split(",") if s]
    sizes = [int(s) for s in args.sizes.split(",") if s]
    unknown = sorted(set(signals) - set(SIGNALS))
    if unknown:
        parser.error(f"unknown signal {unknown[0]!r}; use {SIGNALS}")
    jobs = [(s, sizes[0]) for s in signals] + [(args.curve_signal or signals[0], n) for n in sizes[1:]]
    started = time.monotonic()
    rows: list[dict] = []
    for i, (signal, n) in enumerate(jobs, 1):
        print(f"== job {i}/{len(jobs)} ({(time.monotonic() - started) / 60:.1f} min so far)", flush=True)
        rows += run_signal(signal, n, args)
        save_results(Path(args.out) / args.recipe, pd.DataFrame(rows))
    print(f"\nrecipe {args.recipe}: {(time.monotonic() - started) / 60:.1f} min; train overrides {args.train}\n")
    print_table(pd.DataFrame(rows))


if __name__ == "__main__":
    main()
