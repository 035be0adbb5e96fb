"""`wsi-prognosis synth out=DIR preset=demo|tiny|benchmark seed=N [overrides]`."""

from __future__ import annotations

import logging
from typing import Any

from omegaconf import DictConfig, OmegaConf

from wsi_prognosis.errors import ConfigurationError

log = logging.getLogger(__name__)
TOP_LEVEL = {"out", "preset", "seed"}


def config_from_cfg(cfg: DictConfig) -> "SynthConfig":  # noqa: F821
    """Validate the Hydra config into a SynthConfig: preset + seed + every non-null override."""
    from wsi_prognosis.synth import SynthConfig

    values: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    if values.get("out") in (None, "", "???"):
        raise ConfigurationError("synth: `out` is required. Fix: wsi-prognosis synth out=DIR.")
    try:
        seed = int(values.get("seed", 0))
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"synth: seed={values.get('seed')!r} is not an integer. Fix: seed=N.") from exc
    overrides = {k: v for k, v in values.items() if k not in TOP_LEVEL and v is not None}
    return SynthConfig.from_preset(str(values.get("preset", "demo")), seed=seed, **overrides)


def run(cfg: DictConfig) -> dict[str, Any]:
    config = config_from_cfg(cfg)
    from wsi_prognosis.synth import make_cohort

    result = make_cohort(cfg.out, config)
    log.info("synth: wrote %s (%d slides: %s); gallery %s", result["manifest"], result["n_slides"],
             result["slides_per_cohort"], result["gallery"])
    return result
