"""`wsi-prognosis review`: a read-only web page for pathologists over a scored batch.

- `index`: the batch (scores.csv + per-slide records, QC, availability); `entry`: one slide and
  its QC flags; `query`: filters, sort and paging;
- `deepzoom`: OpenSlide deep-zoom tiles from a worker-process pool, LRU caches;
- `overlay`: tile scores, tissue outline and thumbnails for the viewer;
- `app`: the Starlette app (batch page, viewer, tiles, JSON);
- `server`: binding the port and running uvicorn.

Static files: `static/` (CSS, JS, and OpenSeadragon's built files, BSD-3-Clause, vendored with
its licence so the page works offline); page templates in `templates/` (Jinja2).
"""
