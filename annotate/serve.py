"""`fewsam annotate`: open the annotation folder, pick the engine, serve the page on this machine.

The URL printed carries a random token (as Jupyter's does); without it the page and the API
answer 401. The server binds 127.0.0.1 unless told otherwise: to label on a remote machine,
forward the port (`ssh -L 8765:127.0.0.1:8765 host`) and open the printed URL locally.
"""

from __future__ import annotations

import secrets
import sys
from pathlib import Path

from annotate.engines import open_engine
from annotate.server import create_app
from annotate.session import Session
from core.errors import FewsamError
from core.params import Params
from synth.annotations import check_folder, has_manifest
from synth.check import refuse
from synth.datasets import open_dataset

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def hosts_for(host: str, port: int) -> set[str]:
    """Host header values that name this server (loopback names always)."""
    names = {*LOOPBACK, host}
    return {f"{n}:{port}" if ":" not in n else f"[{n}]:{port}" for n in names}


def build(params: Params, folder: Path, engine: str, adapter: Path | None) -> Session:
    """The session over `folder`: refuses a folder whose files the page could not write."""
    if not has_manifest(folder):
        raise FewsamError(
            f"{folder}: no slices.csv: run `fewsam synth suggest` first to choose the slices"
        )
    reader = open_dataset(params.dataset, params.seed)
    checked = check_folder(reader, folder)
    refuse(checked.blocking, folder, "fix them first (`fewsam data check` lists them)")
    model = params.model
    chosen = open_engine(
        engine, model.arch, model.checkpoint, model.input_size, len(reader.classes), adapter
    )
    return Session(reader, folder, chosen)


def serve(
    params: Params,
    folder: Path,
    engine: str,
    adapter: Path | None,
    host: str,
    port: int,
    threads: int = 0,
) -> None:
    """Serve the page until interrupted. `threads` > 0 sets PyTorch's CPU threads: on a 2-core
    machine shared with other work, one thread answered prompts far faster than two
    (BENCHMARKS.md, *Labeling with SAM*)."""
    import torch
    import uvicorn

    if threads > 0:
        torch.set_num_threads(threads)
    session = build(params, folder, engine, adapter)
    token = secrets.token_urlsafe(24)
    app = create_app(session, token, hosts_for(host, port))
    if host not in LOOPBACK:
        print(
            f"warning: serving on {host}: anyone who can reach this address and has the token "
            "can read the scans and write the labels",
            file=sys.stderr,
        )
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    print(f"annotate: engine {session.engine.name}, {len(session.rows())} slices in {folder}")
    print(f"open http://{shown}:{port}/?token={token}", flush=True)
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning")
    finally:
        session.close()
