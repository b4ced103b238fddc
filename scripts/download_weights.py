"""Fetch LTX-2 model files from the Hugging Face Hub into the Hugging Face cache ahead of time.

    python scripts/download_weights.py --default        # what `ltx2-mlx generate` uses given no paths
    python scripts/download_weights.py --what distilled-lora --what ic-lora-union   # files beside it
    python scripts/download_weights.py --all            # the default model and every file that fits it
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
from LTX_2_MLX.loader.hub import CHECKPOINTS, DEFAULT_EXTRAS, DEFAULT_MODEL, EXTRAS, GEMMAS, LORAS, UPSCALERS, fetch

DEFAULT_GEMMA = next(name for name, folder in GEMMAS.items() if folder == DEFAULT_MODEL.gemma)
GENERATION_NAMES = {"2.3": "LTX-2.3 (22B)", "2": "LTX-2 (19B)"}
EXTRAS_HELP = "\b\nFiles beside a checkpoint (--what NAME):\n" + "\n".join(
    f"  {name:<22}{extra.file.filename}\n  {'':<22}for {GENERATION_NAMES[extra.generation]}: {extra.used_for}"
    for name, extra in EXTRAS.items()
)


def _link(name: str, path: Path, dest: Path) -> Path:
    """A symlink dest/<name> to the cached file or folder (an existing non-link is kept)."""
    link = dest / name
    if link.is_symlink():
        link.unlink()
    if not link.exists():
        link.symlink_to(path, target_is_directory=path.is_dir())
    return link


@click.command(epilog=EXTRAS_HELP)
@click.option(
    "--default", "default_model", is_flag=True,
    help=f"Exactly what `ltx2-mlx generate` fetches given no paths: {DEFAULT_MODEL.checkpoint.filename}, "
    f"{DEFAULT_MODEL.spatial_upscaler.filename} and {DEFAULT_MODEL.gemma.repo}.",
)  # fmt: skip
@click.option(
    "--what", "extras", type=click.Choice(list(EXTRAS)), multiple=True, metavar="NAME",
    help="A file beside the checkpoint: a LoRA, an IC-LoRA, the x1.5 upscaler (listed below); repeatable.",
)  # fmt: skip
@click.option(
    "--all", "everything", is_flag=True,
    help=f"--default and every file beside it that fits LTX-{DEFAULT_MODEL.generation}: {', '.join(DEFAULT_EXTRAS)}.",
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
def main(default_model, extras, everything, models, upscalers, loras, gemma, dest: Path | None) -> None:
    """Fetch the chosen files into the Hugging Face cache and print where they are."""
    items = [CHECKPOINTS[name] for name in models] + [UPSCALERS[name] for name in upscalers]
    items += [LORAS[name] for name in loras] + ([GEMMAS[gemma]] if gemma else [])
    if default_model or everything:
        items += [DEFAULT_MODEL.checkpoint, DEFAULT_MODEL.spatial_upscaler, DEFAULT_MODEL.gemma]
    items += [EXTRAS[name].file for name in (*extras, *(DEFAULT_EXTRAS if everything else ()))]
    items = list(dict.fromkeys(items))
    if not items:
        raise click.UsageError(
            "choose something to download: --default, --what, --all, --model, --upscaler, --lora and/or --gemma"
        )
    paths = fetch(items)
    if dest is not None:
        dest.mkdir(parents=True, exist_ok=True)
        paths = [_link(Path(item.name).name, path, dest) for item, path in zip(items, paths)]
    for item, path in zip(items, paths):
        click.echo(f"{item.name}: {path}")


if __name__ == "__main__":
    # One-line `error: …` messages and exit codes, as every ltx2-mlx command.
    sys.exit(run_cli(lambda: main.main(standalone_mode=False), debug_requested))
