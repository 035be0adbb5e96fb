"""`wsi-prognosis analyze scores=CSV clinical=CSV out=DIR`: survival analysis per cohort.

Validates the config into `AnalysisConfig` (`survival.config_from_dict`), reads both tables
leniently (bad rows are reported, not fatal), runs `wsi_prognosis.survival.analyze` and writes
summary.json, at_risk.csv, tables, figures, report.html and run_analyze.json into `out`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from wsi_prognosis.errors import ConfigurationError
from wsi_prognosis.provenance import write_run_record
from wsi_prognosis.survival import analyze, config_from_dict, read_table, write_analysis

log = logging.getLogger(__name__)


def _shift(cfg: DictConfig, summary: dict, alpha: float) -> None:
    """The domain-shift check: shares with CIs next to the tuning shares (survival.shift_report)."""
    from wsi_prognosis.survival.shift_report import ShareShiftConfig, attach_shift, load_shift_reference

    section = cfg.get("shift")
    shift_config = ShareShiftConfig.from_mapping(None if section is None else OmegaConf.to_container(section, resolve=True))
    block = attach_shift(summary, load_shift_reference(cfg.scores, cfg.get("bundle")), shift_config, alpha)
    if not block["available"]:  # a warning where a reference was expected; foreign score tables just lack one
        (log.warning if block["source"] else log.info)("domain-shift check: %s", block["reason"])
    for name in block["flagged"]:
        log.warning("domain shift: cohort %r: %s (thresholds not refitted)", name,
                    "; ".join(summary["cohorts"][name]["shift"]["reasons"]))


def run(cfg: DictConfig) -> dict:
    """Run the analysis stage; returns the summary dict."""
    for key in ("scores", "clinical", "out"):
        if OmegaConf.is_missing(cfg, key):
            raise ConfigurationError(f"`{key}` is required: wsi-prognosis analyze scores=CSV clinical=CSV out=DIR")
    study = None  # protocol=FILE: verified before anything is computed; its locked configuration applies
    if cfg.get("protocol"):
        from wsi_prognosis.study.protocol import ProtocolRun

        study = ProtocolRun(cfg.protocol, cfg.scores, OmegaConf.to_container(cfg.get("analysis") or {}, resolve=True))
        for deviation in study.deviations:
            log.warning("deviation from protocol %s: %s", study.protocol["id"][:16], deviation)
    config = study.config if study else config_from_dict(OmegaConf.to_container(cfg.get("analysis") or {}, resolve=True))
    out = Path(cfg.out)
    scores = read_table(cfg.scores, "scores")
    clinical = read_table(cfg.clinical, "clinical")
    if study:
        study.check_clinical(list(clinical.columns), cfg.clinical)
    result = analyze(scores, clinical, config)
    if study:
        result.summary["protocol"] = study.summary(result.summary)
    s = result.summary
    _shift(cfg, s, config.alpha)
    log.info("analysed %d patient(s) in %d cohort(s); %d excluded, %d/%d unmatched (scores/clinical), %d failed slide(s)",
             s["n_analysed"], len(s["cohorts"]), s["excluded"]["n"], s["unmatched"]["in_scores_not_clinical"],
             s["unmatched"]["in_clinical_not_scores"], s["failed_slides"])
    for note in s["notes"]:
        log.warning("%s", note)
    paths = write_analysis(result, out)
    write_run_record(out, "analyze", OmegaConf.to_container(cfg, resolve=True),
                     inputs={"scores": cfg.scores, "clinical": cfg.clinical,
                             **({"protocol": cfg.protocol} if study else {})}, seed=config.seed,
                     extra={"outputs": {k: str(v) for k, v in paths.items()}})
    log.info("report: %s", paths["report"])
    return s
