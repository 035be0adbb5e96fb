"""Batch inference with a bundle: tiles -> member slide scores -> ensemble score -> patient score.

- `engine`: the DataLoader/worker pipeline and the ensemble runner (GPU: bf16, channels_last);
- `batch`: `score_manifest`, resumable per slide, sharded, failed slides recorded;
- `aggregate`: scores.csv / patient_scores.csv from per-slide records;
- `exports`: heatmap PNG and QuPath GeoJSON;
- `merge`: join sharded runs.
"""

from wsi_prognosis.scoring.aggregate import PATIENT_COLUMNS, SLIDE_COLUMNS, ensemble_score, patient_table, slide_table
from wsi_prognosis.scoring.batch import ScoreOptions, ScoreResult, score_manifest
from wsi_prognosis.scoring.engine import EngineConfig, EnsembleRunner, LoadedMember, Preprocessing, TileJob, run_jobs
from wsi_prognosis.scoring.shard import Shard, select_shard

__all__ = [
    "PATIENT_COLUMNS", "SLIDE_COLUMNS", "EngineConfig", "EnsembleRunner", "LoadedMember", "Preprocessing",
    "ScoreOptions", "ScoreResult", "Shard", "TileJob", "ensemble_score", "patient_table", "run_jobs",
    "score_manifest", "select_shard", "slide_table",
]
