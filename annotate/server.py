"""The HTTP API of `fewsam annotate`, which the page uses and a script or a viewer plugin can too.

    GET  /                               the page (`?token=` once: it sets a cookie)
    GET  /api/info                       classes (id, name, colour), engine, folder
    GET  /api/slices                     the listed slices in rank order: id, case, slice, axis,
                                         round, rank, negative, done
    GET  /api/slices/{id}/image          8-bit PNG of the slice as shown (first channel)
    POST /api/slices/{id}/prompt         {"class": k, "box": [x0, y0, x1, y1] | null,
                                          "points": [[x, y, 1 | 0], ...],
                                          "mask_input": true | false}
                                         -> {"mask": base64 PNG (0/1), "score": s, "ms": t}
    GET  /api/slices/{id}/label          8-bit PNG of class ids as saved; header ETag
    PUT  /api/slices/{id}/label          body: that PNG (Content-Type: image/png); header
                                         If-Match: the ETag read; `?negative=1` marks the slice
                                         a negative exemplar (it must then be all background)

Coordinates are the slice's pixel grid: x to the right, y down, integers at pixel centres. Every
request to /api carries `Authorization: Bearer <token>` or the cookie the page load set. The Host
header must name this server and an Origin header, when sent, this server's origin: another web
page open in the same browser can neither read nor write (CSRF, DNS rebinding). Errors are one
JSON line `{"detail": "..."}` with a 4xx status; the server goes on serving.
"""

from __future__ import annotations

import base64
import hmac
import json
import struct
import time
from importlib.resources import files
from typing import Any

import cv2
import numpy as np
import torch
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from annotate.engines import Prompt
from annotate.session import Conflict, Session
from core.errors import FewsamError, InputError

COOKIE = "fewsam_annotate"
MAX_JSON = 64 * 1024  # a prompt is a class, a box and a few dozen clicks
MAX_PNG = 16 * 1024 * 1024
# Class colours: tab10 without its grey, as the overlays of evaluate.reports.label_colormap.
PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#bcbd22", "#17becf",
)  # fmt: skip
PAGE_FILES = {"app.js": "text/javascript", "style.css": "text/css"}


class BadRequest(Exception):
    def __init__(self, status: int, detail: str) -> None:
        self.status = status
        self.detail = detail


def png_bytes(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", np.ascontiguousarray(image, np.uint8))
    assert ok
    return data.tobytes()


def png_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG's header, or None when `data` is no PNG (read before decoding,
    so a small file that inflates to a huge image is refused unopened)."""
    if len(data) < 24 or data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", data[16:24])


def decode_label(data: bytes, hw: tuple[int, int], num_classes: int) -> np.ndarray:
    """An 8-bit one-channel PNG of class ids on the slice's H x W grid, checked."""
    h, w = hw
    size = png_size(data)
    if size is None:
        raise BadRequest(400, "the label map must be a PNG (Content-Type: image/png)")
    if size != (w, h):
        raise BadRequest(400, f"the label map is {size[0]}x{size[1]}, the slice {w}x{h} (w x h)")
    plane = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if plane is None or plane.ndim != 2 or plane.dtype != np.uint8:
        raise BadRequest(400, "the label map must be an 8-bit one-channel (grey) PNG")
    bad = sorted(int(v) for v in np.unique(plane) if v > num_classes)
    if bad:
        raise BadRequest(400, f"class ids {bad[:8]} outside 0..{num_classes}")
    return plane


def parse_prompt(body: Any, hw: tuple[int, int], num_classes: int) -> tuple[Prompt, bool]:
    """The JSON body of a prompt, checked against the slice (H x W) and the classes."""
    h, w = hw
    if not isinstance(body, dict):
        raise BadRequest(400, "the body must be a JSON object")
    cls = body.get("class")
    if not isinstance(cls, int) or isinstance(cls, bool) or not 1 <= cls <= num_classes:
        raise BadRequest(400, f"class must be an integer 1..{num_classes}, got {cls!r}")

    def inside(x: Any, y: Any) -> tuple[float, float]:
        ok = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (x, y))
        if not ok or not (0 <= x <= w - 1 and 0 <= y <= h - 1):
            raise BadRequest(400, f"({x}, {y}) is outside the {w}x{h} slice")
        return float(x), float(y)

    box = body.get("box")
    if box is not None:
        if not isinstance(box, list) or len(box) != 4:
            raise BadRequest(400, "box must be [x0, y0, x1, y1] or null")
        x0, y0 = inside(box[0], box[1])
        x1, y1 = inside(box[2], box[3])
        box = (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
    points = body.get("points", [])
    if not isinstance(points, list) or len(points) > 200:
        raise BadRequest(400, "points must be a list of at most 200 [x, y, 1 | 0]")
    parsed = []
    for p in points:
        if not isinstance(p, list) or len(p) != 3 or p[2] not in (0, 1):
            raise BadRequest(400, f"a point is [x, y, 1 (positive) | 0 (negative)], got {p!r}")
        parsed.append((*inside(p[0], p[1]), int(p[2])))
    if box is None and not parsed:
        raise BadRequest(400, "a prompt needs a box or at least one point")
    return Prompt(cls, box, tuple(parsed)), bool(body.get("mask_input", True))


def create_app(session: Session, token: str, hosts: set[str]) -> FastAPI:
    """The app over `session`; `hosts`: the Host header values that name this server."""
    app = FastAPI(title="fewsam annotate", docs_url=None, redoc_url=None, openapi_url=None)
    origins = {f"http://{h}" for h in hosts}
    # Last low-resolution logits per (slice, class), fed back as SAM's mask input.
    previous: dict[tuple[int, int], torch.Tensor] = {}

    def authorized(request: Request) -> bool:
        header = request.headers.get("authorization", "")
        given = (
            header[7:] if header.lower().startswith("bearer ") else request.cookies.get(COOKIE, "")
        )
        return hmac.compare_digest(given.encode(), token.encode())

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Response:
        if request.headers.get("host", "") not in hosts:
            return JSONResponse({"detail": "unknown Host header"}, status_code=403)
        origin = request.headers.get("origin")
        if origin is not None and origin not in origins:
            return JSONResponse({"detail": f"requests from {origin} are refused"}, status_code=403)
        if request.url.path.startswith("/api/") and not authorized(request):
            return JSONResponse({"detail": "missing or wrong token"}, status_code=401)
        return await call_next(request)

    @app.exception_handler(BadRequest)
    async def bad_request(request: Request, e: BadRequest) -> Response:
        return JSONResponse({"detail": e.detail}, status_code=e.status)

    def slice_hw(slice_id: int) -> tuple[int, int]:
        image = _image(slice_id)
        return int(image.shape[1]), int(image.shape[2])

    def _image(slice_id: int) -> np.ndarray:
        try:
            return session.image(slice_id)
        except KeyError:
            raise BadRequest(404, f"no slice {slice_id} in the manifest") from None
        except InputError as e:
            raise BadRequest(409, str(e)) from None

    async def body_of(request: Request, limit: int) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise BadRequest(413, f"body over {limit} bytes")
        data = b""
        async for chunk in request.stream():
            data += chunk
            if len(data) > limit:
                raise BadRequest(413, f"body over {limit} bytes")
        return data

    @app.get("/", response_class=HTMLResponse)
    def page(request: Request) -> Response:
        given = request.query_params.get("token")
        if given is not None:
            if not hmac.compare_digest(given.encode(), token.encode()):
                return JSONResponse({"detail": "wrong token"}, status_code=403)
            # The token leaves the address bar: the cookie carries it from here on.
            response = RedirectResponse("/", status_code=303)
            response.set_cookie(COOKIE, token, httponly=True, samesite="strict")
            return response
        if not authorized(request):
            return HTMLResponse(
                "<p>Open the address <code>fewsam annotate</code> printed.</p>", 401
            )
        html = files("annotate").joinpath("page/index.html").read_text()
        return HTMLResponse(html, headers={"Cache-Control": "no-store"})

    @app.get("/page/{name}")
    def page_file(request: Request, name: str) -> Response:
        if name not in PAGE_FILES:  # a fixed set: no request names a path
            return JSONResponse({"detail": "not found"}, status_code=404)
        text = files("annotate").joinpath(f"page/{name}").read_text()
        return Response(text, media_type=PAGE_FILES[name], headers={"Cache-Control": "no-store"})

    @app.get("/api/info")
    def info() -> dict[str, Any]:
        classes = [
            {"id": k, "name": name, "color": PALETTE[(k - 1) % len(PALETTE)]}
            for k, name in enumerate(session.classes, start=1)
        ]
        return {"classes": classes, "engine": session.engine.name, "folder": str(session.folder)}

    @app.get("/api/slices")
    def slices() -> dict[str, Any]:
        try:
            listed = session.slices()
        except FewsamError as e:
            raise BadRequest(409, str(e)) from None
        return {
            "slices": [
                {
                    "id": s.id,
                    "case": s.row.case,
                    "slice": s.row.slice,
                    "axis": s.row.axis,
                    "round": s.row.round,
                    "rank": s.row.rank,
                    "negative": s.row.negative,
                    "done": s.done,
                }
                for s in listed
            ]
        }

    @app.get("/api/slices/{slice_id}/image")
    def image(slice_id: int) -> Response:
        plane = _image(slice_id)[0]
        return Response(png_bytes(np.round(plane * 255.0)), media_type="image/png")

    @app.post("/api/slices/{slice_id}/prompt")
    async def prompt(slice_id: int, request: Request) -> dict[str, Any]:
        data = await body_of(request, MAX_JSON)
        try:
            body = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise BadRequest(400, f"malformed JSON ({e.__class__.__name__})") from None
        hw = await run_in_threadpool(slice_hw, slice_id)
        parsed, use_previous = parse_prompt(body, hw, len(session.classes))
        # The encoder can take a second or more: off the event loop, so other requests go on.
        return await run_in_threadpool(answer_prompt, slice_id, parsed, use_previous)

    def answer_prompt(slice_id: int, parsed: Prompt, use_previous: bool) -> dict[str, Any]:
        start = time.perf_counter()
        emb = session.embedding(slice_id)
        key = (slice_id, parsed.cls)
        mask_input = previous.get(key) if use_previous and parsed.points else None
        answer = session.engine.predict(emb, parsed, mask_input)
        if answer.logits is not None:
            previous[key] = answer.logits
        ms = (time.perf_counter() - start) * 1000.0
        encoded = base64.b64encode(png_bytes(answer.mask.astype(np.uint8))).decode()
        return {"mask": encoded, "score": answer.score, "ms": round(ms, 1)}

    @app.get("/api/slices/{slice_id}/label")
    def get_label(slice_id: int) -> Response:
        _image(slice_id)
        try:
            plane, tag = session.label(slice_id)
        except InputError as e:
            raise BadRequest(409, str(e)) from None
        return Response(png_bytes(plane), media_type="image/png", headers={"ETag": f'"{tag}"'})

    @app.put("/api/slices/{slice_id}/label")
    async def put_label(slice_id: int, request: Request) -> dict[str, Any]:
        hw = await run_in_threadpool(slice_hw, slice_id)
        if request.headers.get("content-type", "").split(";")[0].strip() != "image/png":
            raise BadRequest(415, "the label map must be sent as Content-Type: image/png")
        match = request.headers.get("if-match")
        if match is None:
            raise BadRequest(428, "If-Match: the ETag of the label as read is required")
        plane = decode_label(await body_of(request, MAX_PNG), hw, len(session.classes))
        negative = request.query_params.get("negative", "0") in ("1", "true", "yes")
        try:
            tag = await run_in_threadpool(session.save, slice_id, plane, match.strip('"'), negative)
        except Conflict as e:
            raise BadRequest(409, str(e)) from None
        except ValueError as e:
            raise BadRequest(400, str(e)) from None
        except InputError as e:
            raise BadRequest(409, f"{e}; nothing was written") from None
        for k in range(1, len(session.classes) + 1):
            previous.pop((slice_id, k), None)
        listed = await run_in_threadpool(session.slices)
        return {"etag": tag, "done": any(s.done for s in listed if s.id == slice_id)}

    return app
