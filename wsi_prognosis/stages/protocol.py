"""`wsi-prognosis protocol bundle=DIR out=FILE.json [primary.*=...] [secondary.*=...] [plan=PLAN.json]`.

Locks the validation protocol before the external cohort is scored: checks the bundle (hashes,
thresholds), the cohort and covariate names and alpha, then writes protocol.json (its id is the
sha256 of its canonical JSON) and protocol.html beside it, and run_protocol.json in that folder.
An existing out= file is never replaced.
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from wsi_prognosis.errors import ConfigurationError

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict:
    """Build, check and write the protocol; return the record."""
    from wsi_prognosis.provenance import write_run_record
    from wsi_prognosis.study.protocol import build_protocol, write_protocol

    c = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(c, dict)
    for key in ("bundle", "out"):
        if OmegaConf.is_missing(cfg, key):
            raise ConfigurationError(f"`{key}` is required: wsi-prognosis protocol bundle=DIR out=FILE.json")
    out = Path(str(c["out"]))
    if out.suffix.lower() != ".json":
        raise ConfigurationError(f"out={out}: the protocol is a file; give out=PATH/protocol.json.")
    if out.exists():  # checked before the bundle's hashes are read
        from wsi_prognosis.errors import ProtocolError

        raise ProtocolError(f"{out}: already exists. A protocol is never edited or replaced: a changed plan is a new file "
                            "with a new id. Fix: choose another out= (the old protocol stays valid as history).")
    landmarks = c.get("landmarks") or []
    if isinstance(landmarks, (int, float)):
        landmarks = [landmarks]
    record = build_protocol(
        c["bundle"], primary=c.get("primary") or {}, secondary=c.get("secondary") or {}, analysis=c.get("analysis") or {},
        endpoint=c.get("endpoint") or {}, landmarks=[float(t) for t in landmarks], title=str(c.get("title") or ""),
        clinical=c.get("clinical"), manifest=c.get("manifest"), cohorts=[str(x) for x in c.get("cohorts") or []],
        plan=c.get("plan"), exclusions=[str(x) for x in c.get("exclusions") or []])
    json_path, html_path = write_protocol(record, out)
    inputs = {"bundle.json": Path(str(c["bundle"])) / "bundle.json"}
    for key in ("plan", "clinical", "manifest"):
        if c.get(key):
            inputs[key] = Path(str(c[key]))
    write_run_record(out.parent, "protocol", c, inputs=inputs,
                     extra={"protocol_id": record["id"], "protocol": str(json_path), "bundle_id": record["bundle"]["id"]})
    print(f"protocol {record['id'][:16]} locked at {record['locked_at']}: {record['primary']['description']} "
          f"({record['primary']['decision_rule']}) -> {json_path}", flush=True)
    log.info("protocol %s -> %s, %s", record["id"], json_path, html_path)
    return record
