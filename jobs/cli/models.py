"""``facewatch models``: show the embedders and import weights that cannot be downloaded."""

from __future__ import annotations

import shutil
from pathlib import Path

import typer

from jobs.cli.common import console, get_context
from pipelines.embedders.backends import facenet_cache_path, load_facenet_state
from pipelines.embedders.base import WeightsError
from pipelines.images import sha256_file

app = typer.Typer(help="Model weights: show what is available, import local files.")


@app.command("import-facenet")
def import_facenet(
    path: Path = typer.Argument(
        ..., exists=True, dir_okay=False, help="the 20180402-114759-vggface2.pt file"
    ),
    sha256: str | None = typer.Option(None, help="expected sha256; checked when given"),
) -> None:
    """Check a facenet-vggface2 weights file and copy it to where facenet-pytorch looks."""
    load_facenet_state(path, sha256)
    target = facenet_cache_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, target)
    console.print(f"imported {path} -> {target} (sha256 {sha256_file(target)})")


@app.command("ls")
def list_models(ctx: typer.Context) -> None:
    """Which embedders can run here, and where their weights are."""
    import torch

    from pipelines.config import DlibResnetConfig, FacenetConfig
    from pipelines.embedders.backends import DlibResnetEmbedder, FacenetEmbedder

    settings = get_context(ctx).settings()
    cpu = torch.device("cpu")
    for emb in (DlibResnetEmbedder(DlibResnetConfig(), cpu), FacenetEmbedder(FacenetConfig(), cpu)):
        try:
            emb.load()
            state = f"ready ({emb.info.key})"
        except WeightsError as exc:
            state = "unavailable: " + str(exc).splitlines()[0]
        mark = " (configured)" if emb.name == settings.embedder.type else ""
        console.print(f"{emb.name}{mark}: {state}")
