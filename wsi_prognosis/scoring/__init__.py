"""Batch inference with a bundle: tiles -> member slide scores -> ensemble score -> patient score.

- `scoring.engine`: the DataLoader/worker pipeline and the ensemble runner (GPU: bf16, channels_last);
- `scoring.batch`: `score_manifest`, resumable per slide, sharded, failed slides recorded;
- `scoring.aggregate`: scores.csv / patient_scores.csv from per-slide records;
- `scoring.exports`: heatmap PNG and QuPath GeoJSON;
- `scoring.records`: the per-slide result files; `scoring.shard` / `scoring.merge`: scale-out.

Only the torch-free parts are imported here, so reading score tables never pays for torch;
import `wsi_prognosis.scoring.batch` / `.engine` for inference.
"""

from wsi_prognosis.scoring.aggregate import (
    PATIENT_AGGREGATIONS,
    PATIENT_COLUMNS,
    SLIDE_COLUMNS,
    ensemble_score,
    patient_table,
    slide_table,
)
from wsi_prognosis.scoring.shard import Shard, select_shard

__all__ = [
    "PATIENT_AGGREGATIONS", "PATIENT_COLUMNS", "SLIDE_COLUMNS", "Shard", "ensemble_score", "patient_table",
    "select_shard", "slide_table",
]
