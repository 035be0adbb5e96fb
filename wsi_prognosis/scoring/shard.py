"""Split a manifest into shards that run as separate jobs (one per GPU or cluster task).

Shards are cut by patient (a patient's slides stay together), round-robin in manifest order,
so every shard gets a similar share and the split is the same on every machine.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from wsi_prognosis.errors import ConfigurationError


@dataclass(frozen=True)
class Shard:
    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ConfigurationError(
                f"shard={self.index}/{self.count}: need 0 <= index < count. Fix: e.g. shard=0/4 ... shard=3/4."
            )

    @classmethod
    def parse(cls, value: Any) -> Shard:
        """`None`, "i/n", or a mapping {index, count} (shard.index=.. shard.count=..)."""
        if value is None or value == "":
            return cls()
        if isinstance(value, Mapping):
            try:
                return cls(int(value.get("index", 0)), int(value.get("count", 1)))
            except (TypeError, ValueError) as exc:
                raise ConfigurationError(f"shard={dict(value)}: index and count must be integers.") from exc
        text = str(value).strip()
        try:
            index, count = (int(part) for part in text.split("/"))
        except ValueError as exc:
            raise ConfigurationError(f"shard={text!r}: expected 'INDEX/COUNT', e.g. shard=0/4.") from exc
        return cls(index, count)

    @property
    def sharded(self) -> bool:
        return self.count > 1

    @property
    def label(self) -> str:
        return f"shard-{self.index}-of-{self.count}"

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def select_shard(manifest: pd.DataFrame, shard: Shard) -> pd.DataFrame:
    """The manifest rows of `shard` (order kept): patient groups k with k % count == index."""
    if not shard.sharded:
        return manifest
    keys = list(zip(manifest["cohort"], manifest["patient_id"]))
    group_of = {key: k for k, key in enumerate(dict.fromkeys(keys))}
    mask = [group_of[key] % shard.count == shard.index for key in keys]
    return manifest[mask]
