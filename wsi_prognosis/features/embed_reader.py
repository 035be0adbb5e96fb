"""The reader thread of `embed`: tiles read and decoded (stain matrix applied) ahead of the encoder.

The main thread runs the encoder (ONNX Runtime and torch release the GIL) while this thread reads the
next tiles, so reading hides behind the model. The slides are taken from an iterable in this thread:
with claims (`features.embed`), a slide is claimed only when the reader gets to it.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch

from wsi_prognosis.features.stain import slide_fit, slide_matrix


def chunks(tasks: Iterable[Any], batch: int, target: dict[str, Any] | None) -> Iterator[tuple[Any, str, np.ndarray | None]]:
    """(task, resolution, uint8 tiles) in order, then (task, "", None) when the task is read (or failed:
    `task.error`; its error stops its chunks). `tasks` is iterated here, in the reader thread: with
    claims, a slide is claimed just before its tiles are read."""
    from wsi_prognosis.models.stain import apply_od_matrix
    from wsi_prognosis.slides import TileReader

    for task in tasks:
        try:
            for res, coords in task.coords.items():
                reader = TileReader(task.row["path"], task.grids[res], task.slide_mpp)
                try:
                    matrix = None
                    if target is not None:
                        fit = slide_fit(lambda index: reader.read(coords[index]), len(coords))
                        matrix = torch.from_numpy(slide_matrix(fit, target, res))
                    for start in range(0, len(coords), batch):
                        tiles = reader.read(coords[start:start + batch])
                        if matrix is not None:
                            tiles = apply_od_matrix(torch.from_numpy(tiles), matrix).round_().to(torch.uint8).numpy()
                        yield task, res, tiles
                finally:
                    reader.close()
        except Exception as exc:  # noqa: BLE001 - a slide's read error fails that slide only
            task.error = f"{task.row['path']}: reading tiles failed ({type(exc).__name__}: {exc})"
        yield task, "", None


class Stopped(Exception):
    """The consumer of `_prefetched` is gone: the reader stops waiting for claims."""


def prefetched(source: Iterator[Any], depth: int, stop: threading.Event | None = None) -> Iterator[Any]:
    """Run `source` in a thread, `depth` items ahead (the reader overlaps the encoder). `stop` is set
    when the consumer stops (a source that waits can watch it)."""
    items: queue.Queue[Any] = queue.Queue(maxsize=max(1, depth))
    done = object()
    stop = stop or threading.Event()

    def work() -> None:
        try:
            for item in source:
                if stop.is_set():
                    return
                items.put(item)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            items.put(exc)
        items.put(done)

    thread = threading.Thread(target=work, name="embed-reader", daemon=True)
    thread.start()
    try:
        while (item := items.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a reader waiting on a full queue
            try:
                items.get_nowait()
            except queue.Empty:
                thread.join(0.05)


__all__ = ["Stopped", "chunks", "prefetched"]
