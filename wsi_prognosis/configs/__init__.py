"""Hydra configuration tree (a package so `pkg://wsi_prognosis.configs` works after a plain install).

Importing it registers the `${wsi.parent:PATH}` resolver (the folder of a file given as out=, used by
configs/protocol.yaml, whose output is a file).
"""

from pathlib import Path as _Path

from omegaconf import OmegaConf as _OmegaConf

if not _OmegaConf.has_resolver("wsi.parent"):
    _OmegaConf.register_new_resolver("wsi.parent", lambda path: str(_Path(str(path)).parent))
