"""`wsi-prognosis merge out=DIR [inputs=[...]]`: join sharded score runs."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from wsi_prognosis.errors import ConfigurationError


def run(cfg: DictConfig):
    from wsi_prognosis.provenance import write_run_record
    from wsi_prognosis.scoring.merge import merge_shards

    c = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(c, dict)
    out = Path(str(c["out"]))
    inputs = c.get("inputs")
    if inputs is None:
        folders = [out]
    elif isinstance(inputs, (list, tuple)) and inputs:
        folders = [Path(str(f)) for f in inputs]
    elif isinstance(inputs, str):
        folders = [Path(inputs)]
    else:
        raise ConfigurationError(f"inputs={inputs!r}: a list of score out= folders, e.g. inputs=[runs/s0,runs/s1].")
    summary = merge_shards(folders, out, allow_incomplete=bool(c.get("allow_incomplete", False)))
    from wsi_prognosis.scoring.shift import merged_shift_check

    merged_shift_check(folders, out)  # the domain-shift check on the merged tables (shift.json, shift.csv)
    write_run_record(out, "merge", c, extra=summary)
    return summary
