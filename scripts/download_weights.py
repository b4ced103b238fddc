"""Fetch LTX-2 model files from the Hugging Face Hub into the Hugging Face cache ahead of time.

    python scripts/download_weights.py --default        # what `ltx2-mlx generate` uses given no paths
    python scripts/download_weights.py --model ltx-2-dev --upscaler spatial-x2 --gemma --dest weights

Files go to the Hugging Face cache (HF_HUB_CACHE, ~/.cache/huggingface/hub), where `generate`
finds the default model; their paths are printed, and --dest links them into a folder too.
Files already there are not fetched again; an interrupted download resumes. Gemma 3 is gated:
accept its licence on huggingface.co and run `hf auth login` first.
"""

import sys
from pathlib import Path

import click

from LTX_2_MLX.cli.runner import debug_requested, run_cli
from LTX_2_MLX.loader.hub import CHECKPOINTS, DEFAULT_MODEL, GEMMAS, LORAS, UPSCALERS, fetch

DEFAULT_GEMMA = next(name for name, folder in GEMMAS.items() if folder == DEFAULT_MODEL.gemma)


def _link(name: str, path: Path, dest: Path) -> Path:
    """A symlink dest/<name> to the cached file or folder (an existing non-link is kept)."""
    link = dest / name
    if link.is_symlink():
        link.unlink()
    if not link.exists():
        link.symlink_to(path, target_is_directory=path.is_dir())
    return link


@click.command()
@click.option(
    "--default", "default_model", is_flag=True,
    help=f"Exactly what `ltx2-mlx generate` fetches given no paths: {DEFAULT_MODEL.checkpoint.filename}, "
    f"{DEFAULT_MODEL.spatial_upscaler.filename} and {DEFAULT_MODEL.gemma.repo}.",
)  # fmt: skip
@click.option("--model", "models", type=click.Choice(sorted(CHECKPOINTS)), multiple=True, help="LTX checkpoint(s).")
@click.option("--upscaler", "upscalers", type=click.Choice(sorted(UPSCALERS)), multiple=True)
@click.option("--lora", "loras", type=click.Choice(sorted(LORAS)), multiple=True)
@click.option(
    "--gemma", type=click.Choice(sorted(GEMMAS)), is_flag=False, flag_value=DEFAULT_GEMMA, default=None,
    help=f"The Gemma 3 12B text encoder, about 24 GB; `--gemma` alone is {DEFAULT_GEMMA} ({DEFAULT_MODEL.gemma.repo}).",
)  # fmt: skip
@click.option(
    "--dest", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="Also link the fetched files into this folder (e.g. weights).",
)  # fmt: skip
def main(default_model, models, upscalers, loras, gemma, dest: Path | None) -> None:
    """Fetch the chosen files into the Hugging Face cache and print where they are."""
    items = [CHECKPOINTS[name] for name in models] + [UPSCALERS[name] for name in upscalers]
    items += [LORAS[name] for name in loras] + ([GEMMAS[gemma]] if gemma else [])
    if default_model:
        items += [DEFAULT_MODEL.checkpoint, DEFAULT_MODEL.spatial_upscaler, DEFAULT_MODEL.gemma]
    items = list(dict.fromkeys(items))
    if not items:
        raise click.UsageError("choose something to download: --default, --model, --upscaler, --lora and/or --gemma")
    paths = fetch(items)
    if dest is not None:
        dest.mkdir(parents=True, exist_ok=True)
        paths = [_link(Path(item.name).name, path, dest) for item, path in zip(items, paths)]
    for item, path in zip(items, paths):
        click.echo(f"{item.name}: {path}")


if __name__ == "__main__":
    # One-line `error: …` messages and exit codes, as every ltx2-mlx command.
    sys.exit(run_cli(lambda: main.main(standalone_mode=False), debug_requested))
