"""`fewsam annotate`: the labeling page (annotate/). The command parses options; the work is
`annotate.serve.serve`."""

from __future__ import annotations

from pathlib import Path

import typer

from core.cli_support import PARAMS_OPTION, expected_errors, read_params


@expected_errors
def annotate(
    annotations: Path | None = typer.Option(
        None, "--annotations", help="Annotation folder (default: dataset.annotations)."
    ),
    engine: str = typer.Option(
        "auto",
        "--engine",
        help="base | litemedsam | adapter | auto (litemedsam when installed, else base).",
    ),
    adapter: Path | None = typer.Option(
        None, "--adapter", help="Adapter folder of a previous round (with --engine adapter)."
    ),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (loopback by default)."),
    port: int = typer.Option(8765, "--port", help="Port to listen on."),
    threads: int = typer.Option(
        0, "--threads", min=0, help="CPU threads for the engine (0: PyTorch's default)."
    ),
    params_path: Path = PARAMS_OPTION,
) -> None:
    """Label the suggested slices in a page where SAM drafts each class from a box or clicks."""
    # Imported here: the page's engines load torch and SAM, which every other command (and
    # `fewsam --help`) would otherwise pay for at start-up.
    from annotate.serve import serve

    params = read_params(params_path)
    folder = annotations or Path(params.dataset.annotations)
    serve(params, folder, engine, adapter, host, port, threads)
