"""The review web app (Starlette): the batch page, the viewer, deep-zoom tiles and their data.

Routes (GET/HEAD only; nothing writes):
  /                                      batch page (filters, sort, pages in the query string)
  /slide/<slide_id>                      viewer page (previous / next follow the same query string)
  /dz/<slide_id>.dzi                     Deep Zoom descriptor of the slide's main image
  /dz/<slide_id>_files/<level>/<col>_<row>.jpeg   one deep-zoom tile
  /api/slides                            the batch page's rows as JSON (same query string)
  /api/slide/<slide_id>/scores           tile scores per resolution and member (overlay)
  /api/slide/<slide_id>/tissue           tissue outline polygons, level-0 pixels
  /thumb/<slide_id>.png                  score's heatmap PNG, reduced
  /static/...                            CSS, JS, vendored OpenSeadragon

Every slide id in a URL is looked up in the batch index (a dict); no part of a URL is ever joined
to a file path. Unknown ids, unavailable slides and out-of-range levels / columns / rows are 404.
An unexpected error is logged and answered with a bare 500, never a traceback.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import re
import time
import urllib.parse
from dataclasses import dataclass
from importlib import resources
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from wsi_prognosis.review.deepzoom import BytesLRU, TileService
from wsi_prognosis.review.index import GROUPS, BatchIndex, Query, SlideEntry, neighbours, page_of, select

log = logging.getLogger(__name__)

TILE_URL = re.compile(r"(?P<id>.+)_files/(?P<level>[0-9]{1,3})/(?P<col>[0-9]{1,7})_(?P<row>[0-9]{1,7})\.jpeg")
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": ("default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; "
                                "script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
                                "form-action 'self'"),
}


LOCAL_HOST_NAMES = ("127.0.0.1", "localhost", "::1", "[::1]")


@dataclass(frozen=True)
class ReviewOptions:
    thumbnail_px: int = 160
    per_page: int = 100
    # Host headers answered (others get 400): on localhost this stops a web page elsewhere from
    # reading the review pages through DNS rebinding. None: any (the server was bound to every interface).
    allowed_hosts: tuple[str, ...] | None = None


def _templates() -> Any:
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("wsi_prognosis.review", "templates"),
                             autoescape=jinja2.select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True)
    env.filters["urlquote"] = lambda s: urllib.parse.quote(str(s), safe="")
    env.filters["qs"] = lambda params: urllib.parse.urlencode(params)
    env.filters["qsq"] = lambda params: "?" + urllib.parse.urlencode(params) if params else ""
    env.filters["fmt"] = lambda v, digits=3: "" if v is None else f"{v:.{digits}f}"
    return env


def _open_quietly(tiles: TileService, path: Any) -> None:
    try:
        tiles.slides.geometry(path)
    except Exception as exc:  # reported when the viewer asks for the DZI
        log.warning("%s: cannot open the slide: %s", path, exc)


def _not_found(detail: str = "not found") -> HTTPException:
    return HTTPException(status_code=404, detail=detail)


def create_app(index: BatchIndex, tiles: TileService, options: ReviewOptions = ReviewOptions()) -> Starlette:
    """The ASGI app over one batch index and one tile service (the caller closes the service)."""
    from wsi_prognosis.review.overlay import colormap_lut, thumbnail, tile_scores, tissue_outline

    env = _templates()
    colormap_lut()   # imports matplotlib (~0.4 s) now, not on the first viewer page
    thumbs = BytesLRU(32 * 1024 * 1024)   # reduced heatmaps, b"" where a slide has none
    overlays = BytesLRU(64 * 1024 * 1024)  # encoded tile-score payloads

    def entry_or_404(slide_id: str) -> SlideEntry:
        entry = index.get(slide_id)
        if entry is None:
            raise _not_found(f"no slide {slide_id[:80]!r} in this scored batch")
        return entry

    async def available_entry(slide_id: str) -> SlideEntry:
        entry = entry_or_404(slide_id)
        if not entry.checked:
            await run_in_threadpool(index.check, entry)
        if not entry.available:
            raise _not_found(f"slide {slide_id!r} unavailable: {entry.reason}")
        return entry

    def query_of(request: Request) -> Query:
        params = dict(request.query_params)
        params.setdefault("per_page", str(options.per_page))
        return Query.from_params(params)

    counts = {g: sum(e.risk_group == g for e in index.entries) for g in GROUPS}
    counts["failed"] = sum(e.status != "ok" for e in index.entries)

    async def batch_page(request: Request) -> Response:
        started = time.perf_counter()
        query = query_of(request)
        selected = select(index.entries, query)
        rows, page, pages = page_of(selected, query)
        html = env.get_template("batch.html").render(
            index=index, rows=rows, query=query, page=page, pages=pages, total=len(index.entries),
            n_selected=len(selected), groups=GROUPS, thumbnail_px=options.thumbnail_px,
            sort_keys=[("slide_id", "slide"), ("patient_id", "patient"), ("cohort", "cohort"), ("score", "score"),
                       ("risk_group", "group"), ("n_tiles_10x", "10x"), ("n_tiles_40x", "40x"), ("qc", "QC"),
                       ("spread", "spread"), ("status", "status")],
            unchecked=sum(not e.checked for e in index.entries), counts=counts,
            elapsed_ms=(time.perf_counter() - started) * 1000)
        return HTMLResponse(html)

    async def slides_api(request: Request) -> Response:
        query = query_of(request)
        selected = select(index.entries, query)
        rows, page, pages = page_of(selected, query)
        return JSONResponse({"total": len(index.entries), "selected": len(selected), "page": page, "pages": pages,
                             "rows": [e.summary() for e in rows], "thresholds": index.thresholds})

    async def viewer_page(request: Request) -> Response:
        entry = entry_or_404(request.path_params["slide_id"])
        if not entry.checked:
            await run_in_threadpool(index.check, entry)
        query = query_of(request)
        selected = select(index.entries, query)
        previous, following, position = neighbours(selected, entry.slide_id)
        dimensions = entry.dimensions
        if entry.available and entry.path is not None:
            # the worker processes and this process open the slide while the browser loads the page's
            # scripts: the page does not wait for it (a slide that cannot be opened fails its DZI -> 404,
            # and the viewer says so)
            tiles.prepare(entry.path)
            cached = tiles.slides.cached(entry.path)
            if cached is not None:
                dimensions = cached.dimensions
            else:
                asyncio.get_running_loop().run_in_executor(None, _open_quietly, tiles, entry.path)
        data = {
            "slide": entry.summary(), "dzi": f"/dz/{urllib.parse.quote(entry.slide_id, safe='')}.dzi",
            "scores": f"/api/slide/{urllib.parse.quote(entry.slide_id, safe='')}/scores",
            "tissue": f"/api/slide/{urllib.parse.quote(entry.slide_id, safe='')}/tissue",
            "dimensions": dimensions, "mpp": entry.mpp, "thresholds": index.thresholds, "lut": colormap_lut(),
        }
        html = env.get_template("viewer.html").render(
            entry=entry, data=data, query=query, filters=query.filters(), previous=previous, following=following,
            position=position, n_selected=len(selected), thresholds=index.thresholds, dimensions=dimensions)
        return HTMLResponse(html)

    def encoded_scores(entry: SlideEntry) -> tuple[bytes, bytes]:
        """The overlay payload as JSON and gzipped JSON (36,000 40x tiles x 6 layers: ~2 MB, ~0.5 MB)."""
        body = json.dumps(tile_scores(entry), separators=(",", ":")).encode()
        return body, gzip.compress(body, compresslevel=5)

    async def scores_api(request: Request) -> Response:
        entry = entry_or_404(request.path_params["slide_id"])
        plain, packed = overlays.get((entry.slide_id, "plain")), overlays.get((entry.slide_id, "gzip"))
        if plain is None or packed is None:
            plain, packed = await run_in_threadpool(encoded_scores, entry)   # off the event loop: tiles keep flowing
            overlays.put((entry.slide_id, "plain"), plain)
            overlays.put((entry.slide_id, "gzip"), packed)
        if "gzip" in request.headers.get("accept-encoding", ""):
            return Response(packed, media_type="application/json",
                            headers={"Content-Encoding": "gzip", "Vary": "Accept-Encoding"})
        return Response(plain, media_type="application/json", headers={"Vary": "Accept-Encoding"})

    async def tissue_api(request: Request) -> Response:
        entry = await available_entry(request.path_params["slide_id"])
        return JSONResponse({"polygons": await run_in_threadpool(tissue_outline, entry)})

    async def thumb(request: Request) -> Response:
        name = request.path_params["name"]
        if not name.endswith(".png"):
            raise _not_found()
        entry = entry_or_404(name[: -len(".png")])
        data = thumbs.get(entry.slide_id)
        if data is None:
            data = await run_in_threadpool(thumbnail, entry, options.thumbnail_px) or b""
            thumbs.put(entry.slide_id, data)
        if not data:
            raise _not_found(f"no heatmap for slide {entry.slide_id!r}")
        return Response(data, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})

    async def deepzoom(request: Request) -> Response:
        name = request.path_params["name"]
        if name.endswith(".dzi"):
            entry = await available_entry(name[: -len(".dzi")])
            try:
                geometry = await run_in_threadpool(tiles.slides.geometry, entry.path)
            except Exception as exc:
                log.warning("%s: cannot open the slide: %s", entry.slide_id, exc)
                raise _not_found("the slide file cannot be opened") from None
            return Response(geometry.dzi, media_type="application/xml", headers={"Cache-Control": "no-cache"})
        match = TILE_URL.fullmatch(name)
        if match is None:
            raise _not_found()
        entry = await available_entry(match["id"])
        assert entry.path is not None
        try:
            data = await tiles.tile(entry.slide_id, entry.path, int(match["level"]), int(match["col"]), int(match["row"]))
        except Exception as exc:
            log.warning("%s: tile %s failed: %s", entry.slide_id, name, exc)
            raise _not_found("the tile cannot be read from the slide file") from None
        if data is None:
            raise _not_found("no such tile")
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})

    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        detail = exc.detail if isinstance(exc, HTTPException) else "internal error"
        return PlainTextResponse(f"{status}: {detail}\n", status_code=status, headers=SECURITY_HEADERS)

    async def server_error(request: Request, exc: Exception) -> Response:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return PlainTextResponse("500: internal error (see the server's log)\n", status_code=500,
                                 headers=SECURITY_HEADERS)

    static = StaticFiles(directory=str(resources.files("wsi_prognosis.review") / "static"))
    routes = [
        Route("/", batch_page),
        Route("/api/slides", slides_api),
        Route("/slide/{slide_id}", viewer_page),
        Route("/api/slide/{slide_id}/scores", scores_api),
        Route("/api/slide/{slide_id}/tissue", tissue_api),
        Route("/thumb/{name}", thumb),
        Route("/dz/{name:path}", deepzoom),
        Mount("/static", app=static, name="static"),
    ]
    middleware = [Middleware(ReadOnlyHeaders)]
    if options.allowed_hosts is not None:
        middleware.append(Middleware(TrustedHostMiddleware, allowed_hosts=list(options.allowed_hosts)))
    middleware.append(Middleware(GZipMiddleware, minimum_size=2048, compresslevel=5))
    return Starlette(routes=routes, middleware=middleware,
                     exception_handlers={HTTPException: http_error, Exception: server_error})


class ReadOnlyHeaders:
    """ASGI middleware: GET/HEAD only (405 otherwise) and the security headers on every response."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] not in ("GET", "HEAD"):
            response = PlainTextResponse("405: read-only\n", status_code=405,
                                         headers={"Allow": "GET, HEAD", **SECURITY_HEADERS})
            await response(scope, receive, send)
            return
        extra = [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                message = {**message, "headers": [*message.get("headers", []),
                                                   *((k, v) for k, v in extra if k not in present)]}
            await send(message)

        await self.app(scope, receive, send_with_headers)
