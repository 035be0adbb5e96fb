"""The `tile` stage as functions: one slide (`tile_one_slide`) and a manifest (`tile_manifest`).

Per slide: open it and resolve its MPP, plan each grid's pyramid level (a grid needing more
upsampling than allowed is *refused*: recorded in the store and the summary's warnings, the
other grids are still written), thumbnail at the mask MPP, tissue mask (pen excluded),
optional annotation restriction, aligned grids, a blur measure over a sample of base tiles,
the QC thumbnail, and the store written atomically.

Batch: worker processes (spawn-safe), a progress bar, one summary row per slide whatever
happens, a rerun skips slides whose store is complete and still matches (same slide
fingerprint, same configuration, same manifest mpp and annotation). With claims, several
batches (processes, machines) share one output folder, each slide tiled by one of them.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from wsi_prognosis.atomic import write_text_atomic
from wsi_prognosis.errors import ResolutionError, TileStoreError, WsiPrognosisError
from wsi_prognosis.slides.fingerprint import slide_fingerprint
from wsi_prognosis.slides.slide import Slide
from wsi_prognosis.tiling.config import ResolutionSpec, TilingConfig
from wsi_prognosis.tiling.grid import GridSpec, build_grids
from wsi_prognosis.tiling.store import SlideRecord, TileStoreWriter, open_tile_store, tile_store_path

if TYPE_CHECKING:
    from wsi_prognosis.claims import Claimer, ClaimSettings

__all__ = ["TilingConfig", "ResolutionSpec", "tile_one_slide", "tile_rows", "tile_manifest", "summary_columns"]

log = logging.getLogger(__name__)

BLUR_WINDOW_PX = 224      # blur windows, px at tissue.BLUR_REFERENCE_MPP (the scale its threshold is set for)
PEN_WARNING_FRACTION = 0.05
QC_DIR = "qc"
QC_MAX_PX = 1600          # long side of the QC PNG, px


def summary_columns(config: TilingConfig) -> list[str]:
    counts = [f"n_tiles_{r.name}" for r in config.resolutions]
    return ["slide_id", "status", "error", "mpp", "mpp_source", *counts, "tissue_mm2", "seconds",
            "pen_fraction", "blur", "warnings"]


def _annotation_for(row: Mapping[str, Any], config: TilingConfig) -> Path | None:
    value = row.get("annotation")
    if isinstance(value, str) and value.strip():
        return Path(value)
    if config.annotations_dir is not None:
        candidate = config.annotations_dir / f"{row['slide_id']}.geojson"
        if candidate.is_file():
            return candidate
    return None


def _manifest_mpp(row: Mapping[str, Any]) -> float | None:
    value = row.get("mpp")
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def _slide_inputs(row: Mapping[str, Any], config: TilingConfig) -> dict[str, Any]:
    """Per-slide inputs besides the slide file that change the result (compared on rerun)."""
    annotation = _annotation_for(row, config)
    digest = None
    if annotation is not None and annotation.is_file():
        digest = hashlib.sha256(annotation.read_bytes()).hexdigest()
    return {"manifest_mpp": _manifest_mpp(row), "annotation": str(annotation) if annotation else "",
            "annotation_sha256": digest}


def _row_from_store(store, config: TilingConfig, seconds: float) -> dict[str, Any]:
    row: dict[str, Any] = {
        "slide_id": store.slide_id, "status": "ok", "error": "", "mpp": store.mpp,
        "mpp_source": store.mpp_source, "seconds": round(seconds, 3),
    }
    for spec in config.resolutions:
        row[f"n_tiles_{spec.name}"] = store.n_tiles(spec.name) if spec.name in store.resolutions else None
    qc = store.qc
    row.update(tissue_mm2=qc.get("tissue_mm2"), pen_fraction=qc.get("pen_fraction"), blur=qc.get("blur"),
               warnings="; ".join(qc.get("warnings", [])))
    return row


def _reusable(path: Path, row: Mapping[str, Any], config: TilingConfig, inputs: Mapping[str, Any]) -> bool:
    """True when `path` is a complete store for this slide, configuration and inputs."""
    if not path.is_file():
        return False
    try:
        with open_tile_store(path) as store:
            same = (store.tiling == {**config.to_dict(), "inputs": dict(inputs)}
                    and store.slide_id == str(row["slide_id"]))
            fingerprint = store.fingerprint
    except TileStoreError:
        return False
    if not same:
        return False
    try:
        return slide_fingerprint(row["path"]) == fingerprint
    except WsiPrognosisError:
        return False


def _blur(slide: Slide, coords: np.ndarray, tile_level0_px: float, n: int) -> float | None:
    """Mean Laplacian variance over up to `n` base tiles spread over the kept ones (1.0 µm/px)."""
    from wsi_prognosis.tissue import BLUR_REFERENCE_MPP as BLUR_MPP
    from wsi_prognosis.tissue import blur_score, to_gray

    if n <= 0 or len(coords) == 0:
        return None
    try:
        slide.plan_read(BLUR_MPP)
    except ResolutionError:
        return None  # a slide coarser than 1 µm/px: no comparable blur score
    window_px = max(8, min(BLUR_WINDOW_PX, int(tile_level0_px * slide.mpp / BLUR_MPP)))
    spread = np.linspace(0, len(coords) - 1, num=min(n, len(coords))).round().astype(int)
    pick = spread[np.r_[True, np.diff(spread) > 0]]  # unique (sorted); np.unique would import numpy.ma (17 ms)
    tiles = np.stack([slide.read_region(int(x), int(y), window_px, BLUR_MPP) for x, y in coords[pick]])
    return round(float(blur_score(to_gray(tiles))), 3)


def tile_one_slide(row: Mapping[str, Any], out_dir: str | Path, config: TilingConfig) -> dict[str, Any]:
    """Tile one manifest row into `out_dir/<slide_id>.h5`; return its summary row (never raises
    for a bad slide: the error becomes `status=failed` with the message) plus `action`: `tiled`,
    `reused` (the store was complete and current) or `failed`."""
    started = time.perf_counter()
    out_dir = Path(out_dir)
    slide_id = str(row["slide_id"])
    result: dict[str, Any] = {"slide_id": slide_id, "status": "failed", "error": "", "mpp": None,
                              "mpp_source": "", "tissue_mm2": None, "pen_fraction": None, "blur": None,
                              "warnings": ""}
    for spec in config.resolutions:
        result[f"n_tiles_{spec.name}"] = None
    final = tile_store_path(out_dir, slide_id)
    try:
        inputs = _slide_inputs(row, config)
        if _reusable(final, row, config, inputs):
            with open_tile_store(final) as store:
                return {**_row_from_store(store, config, time.perf_counter() - started), "action": "reused"}
        final.unlink(missing_ok=True)  # stale: another slide version, config or input
        result.update(_tile(row, final, out_dir, config, inputs))
        result["status"] = "ok"
    except WsiPrognosisError as exc:
        result["error"] = str(exc)
    except Exception as exc:  # a batch never stops at one slide; keep the traceback in the log
        log.exception("%s: unexpected error", slide_id)
        result["error"] = f"{row.get('path')}: unexpected {type(exc).__name__}: {exc}"
    result["seconds"] = round(time.perf_counter() - started, 3)
    result["action"] = "tiled" if result["status"] == "ok" else "failed"
    return result


def _tile(row: Mapping[str, Any], final: Path, out_dir: Path, config: TilingConfig,
          inputs: Mapping[str, Any]) -> dict[str, Any]:
    from wsi_prognosis.tissue import annotation_mask, check_polygons_inside, read_qupath_geojson, tissue_mask

    warnings: list[str] = []
    annotation = Path(inputs["annotation"]) if inputs["annotation"] else None
    polygons = None
    if annotation is not None:
        polygons = read_qupath_geojson(annotation)  # parse before any pixel work: fail fast
    elif config.annotations_dir is not None:
        warnings.append(f"no {row['slide_id']}.geojson in {config.annotations_dir}: whole tissue used")

    with Slide.from_path(row["path"], mpp=inputs["manifest_mpp"],
                         allow_objective_power=config.allow_objective_power) as slide:
        warnings.extend(slide.mpp_warnings)
        specs: dict[str, GridSpec] = {}
        refused: dict[str, str] = {}
        for spec in config.resolutions:
            try:
                plan = slide.plan_read(spec.mpp, config.max_upsample)
            except ResolutionError as exc:
                refused[spec.name] = str(exc)
                continue
            specs[spec.name] = GridSpec(spec.name, spec.mpp, spec.tile_px, plan.level, plan.downsample)
        if not specs:
            raise ResolutionError("; ".join(refused.values()))
        for name, why in refused.items():
            warnings.append(f"{name} refused: {why}")

        thumb, thumb_mpp = slide.thumbnail(config.tissue.mask_mpp)
        tissue = tissue_mask(thumb, mpp=thumb_mpp, params=config.tissue)
        mask = tissue.mask
        if polygons is not None:
            width, height = slide.dimensions
            check_polygons_inside(polygons, width, height, annotation)
            mask = mask & annotation_mask(polygons, shape=mask.shape, scale=slide.mpp / thumb_mpp)
        tissue_mm2 = float(np.count_nonzero(mask)) * (thumb_mpp / 1000.0) ** 2

        grids = build_grids(slide.dimensions, slide.mpp, {n: s.tile_um for n, s in specs.items()},
                            mask, thumb_mpp, config.min_tissue_fraction)
        base = max(specs.values(), key=lambda s: s.tile_um)
        base_coords = grids[base.name].coords
        # The QC PNG (zlib, GIL released) is encoded on a thread while the blur windows are read and
        # decoded (also GIL-free): the two longest steps after the mask overlap.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="qc-png") as background:
            qc_png = (background.submit(_write_qc, out_dir / QC_DIR / f"{row['slide_id']}.png", thumb, mask,
                                        tissue.pen, base_coords, base.level0_tile_px(slide.mpp), slide.mpp / thumb_mpp)
                      if config.qc_thumbnails else None)
            blur = _blur(slide, base_coords, base.level0_tile_px(slide.mpp), config.blur_tiles)
        if qc_png is not None:
            qc_png.result()  # the PNG is complete (or its error raised) before the store is written

        if tissue_mm2 == 0:
            warnings.append("no tissue found (blank slide?): zero tiles")
        elif all(len(g.coords) == 0 for g in grids.values()):
            warnings.append(f"tissue found ({tissue_mm2:.2f} mm²) but no tile reaches "
                            f"min_tissue_fraction={config.min_tissue_fraction}")
        if tissue.pen_fraction > PEN_WARNING_FRACTION:
            warnings.append(f"pen ink covers {tissue.pen_fraction:.0%} of the tissue area (excluded)")
        from wsi_prognosis.tissue import BLUR_WARNING_THRESHOLD

        if blur is not None and blur < BLUR_WARNING_THRESHOLD:
            warnings.append(f"possibly out of focus (blur score {blur:.0f} < {BLUR_WARNING_THRESHOLD:.0f})")

        qc = {"tissue_mm2": round(tissue_mm2, 4), "pen_fraction": round(float(tissue.pen_fraction), 4),
              "blur": blur, "warnings": warnings, "mask_threshold": round(float(tissue.threshold), 4)}
        record = SlideRecord(
            slide_id=str(row["slide_id"]), source_path=str(slide.path), fingerprint=slide.fingerprint,
            dimensions=slide.dimensions, mpp=slide.mpp, mpp_source=slide.mpp_source,
            tissue_params=config.tissue.to_dict(), tiling={**config.to_dict(), "inputs": dict(inputs)},
            qc=qc, refused=refused, annotation=str(annotation or ""),
        )
        TileStoreWriter.write(final, record, specs, grids, mask, thumb_mpp, base.name)
        out = {"mpp": slide.mpp, "mpp_source": slide.mpp_source, "tissue_mm2": qc["tissue_mm2"],
               "pen_fraction": qc["pen_fraction"], "blur": blur, "warnings": "; ".join(warnings)}
        for spec in config.resolutions:
            out[f"n_tiles_{spec.name}"] = len(grids[spec.name].coords) if spec.name in grids else None
        return out


def _write_qc(path: Path, thumb: np.ndarray, mask: np.ndarray, pen: np.ndarray, coords: np.ndarray,
              tile_level0_px: float, scale: float) -> None:
    """The QC thumbnail: the slide's own pixels at the mask MPP (never its label or macro image),
    reduced by an integer factor to at most QC_MAX_PX on its long side (PNG encoding of a
    2500-px thumbnail of real tissue costs more than the whole mask)."""
    from PIL import Image

    from wsi_prognosis.tissue import qc_thumbnail, save_png

    factor = -(-max(thumb.shape[:2]) // QC_MAX_PX)
    if factor > 1:
        def reduce(binary: np.ndarray) -> np.ndarray:
            return np.asarray(Image.fromarray(binary.astype(np.uint8) * 255).reduce(factor)) >= 128

        thumb = np.asarray(Image.fromarray(thumb).reduce(factor))
        mask, pen = reduce(mask), reduce(pen)
        scale /= factor
    boxes = np.concatenate([coords, coords + tile_level0_px], axis=1) * scale if len(coords) else None
    save_png(path, qc_thumbnail(thumb, mask, tile_boxes=boxes, pen=pen))


# -- batch ------------------------------------------------------------------------------------
def _records(manifest: Any) -> list[dict[str, Any]]:
    """Manifest rows as plain dicts, from `read_manifest_rows` (a list) or a DataFrame."""
    rows = manifest.to_dict("records") if hasattr(manifest, "to_dict") else [dict(r) for r in manifest]
    return [{k: (None if (isinstance(v, float) and math.isnan(v) and k != "mpp") else v) for k, v in r.items()}
            for r in rows]


def _remove_stale_temporaries(out_dir: Path, older_than_s: float | None = None, *extra: Path) -> None:
    """A killed run can leave `.<name>.h5.*.part`; they are never read, remove them (with other
    workers on the folder: only those untouched for `older_than_s`, a live worker may be writing)."""
    now = time.time()
    for folder in (out_dir, out_dir / QC_DIR, *extra):
        for stale in (folder.glob(".*.part") if folder.is_dir() else ()):
            try:
                if older_than_s is None or now - stale.stat().st_mtime > older_than_s:
                    stale.unlink()
            except FileNotFoundError:
                pass


def _tile_job(row: Mapping[str, Any], out_dir: Path, config: TilingConfig, shared: bool) -> dict[str, Any]:
    """One slide, in a worker process or inline; shared (claims): its summary row saved for the other workers.

    A killed worker's temporary files are left to the sweep at the start of a run (those untouched
    for claims.stale_s): its pool processes may still be finishing their slide, and their files are
    the same bytes as the taker's."""
    result = tile_one_slide(row, out_dir, config)
    if shared:
        from wsi_prognosis.claims.rows import save_row

        save_row(out_dir, result)
    return result


class _Batch:
    """Tile rows as they are submitted, inline (workers=1) or in up to `workers` spawned processes
    (spawn-safe), handing each result to `on_result` in this process. At most `workers` slides are
    in flight, so that a slide is claimed only when a process is free to tile it."""

    def __init__(self, out_dir: Path, config: TilingConfig, workers: int,
                 on_result: Callable[[dict[str, Any]], None], shared: bool = False) -> None:
        self.out_dir, self.config, self.workers, self.on_result, self.shared = out_dir, config, workers, on_result, shared
        self._pool: Any = None
        self._inflight: dict[Any, Mapping[str, Any]] = {}

    def __enter__(self) -> _Batch:
        if self.workers > 1:  # only a batch needs worker processes: a single slide starts faster without them
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"))
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def submit(self, row: Mapping[str, Any]) -> None:
        if self._pool is None:
            self.on_result(_tile_job(row, self.out_dir, self.config, self.shared))
            return
        while len(self._inflight) >= self.workers:
            self._collect(None)
        try:
            future = self._pool.submit(_tile_job, row, self.out_dir, self.config, self.shared)
        except Exception as exc:  # the pool is broken (a worker process died)
            self.on_result(self._lost(row, exc))
            return
        self._inflight[future] = row

    def idle(self, seconds: float) -> None:
        """Wait `seconds`, handing on the slides that finish meanwhile."""
        deadline = time.monotonic() + seconds
        while self._inflight and time.monotonic() < deadline:
            self._collect(deadline - time.monotonic())
        time.sleep(max(0.0, deadline - time.monotonic()))

    def drain(self) -> None:
        while self._inflight:
            self._collect(None)

    def _collect(self, timeout: float | None) -> None:
        from concurrent.futures import FIRST_COMPLETED, wait

        finished, _ = wait(list(self._inflight), timeout=timeout, return_when=FIRST_COMPLETED)
        for future in finished:
            row = self._inflight.pop(future)
            try:
                result = future.result()
            except Exception as exc:  # a worker died (e.g. killed for memory): still a row
                result = self._lost(row, exc)
            self.on_result(result)

    def _lost(self, row: Mapping[str, Any], exc: BaseException) -> dict[str, Any]:
        result = {"slide_id": row["slide_id"], "status": "failed", "action": "failed",
                  "error": f"{row.get('path')}: worker failed ({type(exc).__name__}: {exc})"}
        if self.shared:
            from wsi_prognosis.claims.rows import save_row

            save_row(self.out_dir, result)
        return result


class _Progress:
    """The progress bar and one log line per slide handled; with claims, this worker's share too."""

    def __init__(self, total: int, config: TilingConfig, claimer: Claimer | None = None) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, unit="slide", desc="tile", dynamic_ncols=True)
        self.config, self.claimer = config, claimer
        self.tiles = self.failed = self.handled = self.reused = 0
        self._counted: set[str] = set()

    def __enter__(self) -> _Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.close()

    @property
    def elapsed(self) -> float:
        return self.bar.format_dict.get("elapsed") or 0.0

    def add(self, result: Mapping[str, Any]) -> None:
        """A slide this worker handled."""
        slide_id = str(result["slide_id"])
        counts = {r.name: int(result.get(f"n_tiles_{r.name}") or 0) for r in self.config.resolutions}
        self.handled += 1
        self.tiles += sum(counts.values())
        if result["status"] != "ok":
            self.failed += 1
            log.warning("%s failed: %s", slide_id, result["error"])
        elif result.get("action") == "reused":
            self.reused += 1
            log.info("%s: store complete and current, not tiled again", slide_id)
        else:
            log.info("%s: tiled (%s tiles) in %.1f s", slide_id, ", ".join(f"{k} {v}" for k, v in counts.items()),
                     result.get("seconds") or 0.0)
        self.advance(slide_id)

    def advance(self, slide_id: str) -> None:
        """Count a slide on the bar once, whoever handled it."""
        if slide_id in self._counted:
            return
        self._counted.add(slide_id)
        postfix: dict[str, Any] = {"tiles": self.tiles, "tiles_per_s": f"{self.tiles / max(self.elapsed, 1e-6):.0f}",
                                   "failed": self.failed}
        if self.claimer is not None:
            postfix.update(took=self.claimer.taken, others=self.claimer.held_by_others, taken_over=self.claimer.taken_over)
        self.bar.set_postfix(postfix, refresh=False)
        self.bar.update(1)


def _write_summary(path: Path, rows: list[dict[str, Any]], columns: list[str]) -> None:
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: ("" if row.get(c) is None else row.get(c)) for c in columns})
    write_text_atomic(path, buffer.getvalue())


def tile_rows(manifest: Any, out_dir: str | Path, config: TilingConfig, workers: int = 2,
              claims: ClaimSettings | None = None) -> list[dict[str, Any]]:
    """Tile every slide of a validated manifest (`cohort.read_manifest_rows`, or a DataFrame from
    `read_manifest`) into `out_dir`; return the summary rows in manifest order.

    A slide that fails is a row with `status=failed` and its error; the batch goes on. Without
    claims, `out_dir/summary.csv` is rewritten after every slide. With `claims` enabled, several
    processes (one machine or many, sharing the folder) may run this on one `out_dir` at once:
    each claims a slide before tiling it (`wsi_prognosis.claims`), skips slides others hold,
    saves each slide's row in `out_dir/.summary/`, then waits for the slides others hold (taking
    over those of a worker that died); summary.csv is written once, by the worker that finds
    every slide handled. Imports no pandas (the `tile` stage's start-up).
    """
    out_dir = Path(out_dir)
    rows = _records(manifest)
    workers = min(workers, len(rows)) if len(rows) > 1 else 1
    if claims is not None and claims.enabled:
        from wsi_prognosis.tiling.shared import tile_shared

        return tile_shared(rows, out_dir, config, workers, claims)
    out_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(out_dir)
    order = {row["slide_id"]: i for i, row in enumerate(rows)}
    columns = summary_columns(config)
    done: list[dict[str, Any]] = []
    with _Progress(len(rows), config) as progress:
        def on_result(result: dict[str, Any]) -> None:
            done.append(result)
            progress.add(result)
            done.sort(key=lambda r: order[r["slide_id"]])
            _write_summary(out_dir / "summary.csv", done, columns)

        with _Batch(out_dir, config, workers, on_result) as batch:
            for row in rows:
                batch.submit(row)
            batch.drain()
    log.info("tiled %d slide(s), %d failed, %d tiles in %.1f s", len(done), progress.failed, progress.tiles,
             progress.elapsed)
    return [{c: row.get(c) for c in columns} for row in done]


def tile_manifest(manifest: Any, out_dir: str | Path, config: TilingConfig, workers: int = 2,
                  claims: ClaimSettings | None = None):
    """`tile_rows` with the summary as a DataFrame (for notebooks and the stages that use tables)."""
    import pandas as pd

    return pd.DataFrame(tile_rows(manifest, out_dir, config, workers, claims), columns=summary_columns(config))
