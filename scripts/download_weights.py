"""Download LTX-2 model files from the Hugging Face Hub into weights/.

    python scripts/download_weights.py --model ltx-2-dev --upscaler spatial-x2 --gemma

Gemma 3 is gated: accept its licence on huggingface.co and run `huggingface-cli login` first.
"""

import sys
from pathlib import Path

import click

# name -> (repository, file)
CHECKPOINTS = {
    "ltx-2-dev": ("Lightricks/LTX-2", "ltx-2-19b-dev.safetensors"),
    "ltx-2-dev-fp8": ("Lightricks/LTX-2", "ltx-2-19b-dev-fp8.safetensors"),
    "ltx-2-distilled": ("Lightricks/LTX-2", "ltx-2-19b-distilled.safetensors"),
    "ltx-2-distilled-fp8": ("Lightricks/LTX-2", "ltx-2-19b-distilled-fp8.safetensors"),
    "ltx-2.3-dev": ("Lightricks/LTX-2.3", "ltx-2.3-22b-dev.safetensors"),
    "ltx-2.3-distilled": ("Lightricks/LTX-2.3", "ltx-2.3-22b-distilled-1.1.safetensors"),
}
UPSCALERS = {
    "spatial-x2": ("Lightricks/LTX-2", "ltx-2-spatial-upscaler-x2-1.0.safetensors"),
    "temporal-x2": ("Lightricks/LTX-2", "ltx-2-temporal-upscaler-x2-1.0.safetensors"),
    "ltx-2.3-spatial-x2": ("Lightricks/LTX-2.3", "ltx-2.3-spatial-upscaler-x2-1.1.safetensors"),
}
LORAS = {"ltx-2-distilled-lora": ("Lightricks/LTX-2", "ltx-2-19b-distilled-lora-384.safetensors")}
GEMMA = "google/gemma-3-12b-it"


def _download_file(repo: str, filename: str, destination: Path) -> Path:
    from huggingface_hub import hf_hub_download

    click.echo(f"{repo}/{filename} -> {destination}")
    return Path(hf_hub_download(repo_id=repo, filename=filename, local_dir=destination))


@click.command()
@click.option("--model", "models", type=click.Choice(sorted(CHECKPOINTS)), multiple=True, help="LTX checkpoint(s).")
@click.option("--upscaler", "upscalers", type=click.Choice(sorted(UPSCALERS)), multiple=True)
@click.option("--lora", "loras", type=click.Choice(sorted(LORAS)), multiple=True)
@click.option("--gemma", is_flag=True, help=f"The Gemma 3 12B text encoder ({GEMMA}), about 24 GB.")
@click.option("--dest", type=click.Path(file_okay=False, path_type=Path), default=Path("weights"), show_default=True)
def main(models, upscalers, loras, gemma, dest: Path) -> None:
    """Fetch the chosen files; already-complete files are not downloaded again."""
    if not (models or upscalers or loras or gemma):
        raise click.UsageError("choose something to download: --model, --upscaler, --lora and/or --gemma")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    dest.mkdir(parents=True, exist_ok=True)
    try:
        for table, names in ((CHECKPOINTS, models), (UPSCALERS, upscalers), (LORAS, loras)):
            for name in names:
                _download_file(*table[name], dest)
        if gemma:
            target = dest / GEMMA.split("/")[1]
            click.echo(f"{GEMMA} -> {target}")
            snapshot_download(
                repo_id=GEMMA, local_dir=target,
                allow_patterns=["*.json", "*.safetensors", "tokenizer.model"],
            )  # fmt: skip
    except LocalEntryNotFoundError:
        click.echo("error: cannot reach huggingface.co (offline?); connect and run this again.", err=True)
        sys.exit(1)
    except HfHubHTTPError as err:
        hint = " For Gemma: accept its licence on huggingface.co, then `huggingface-cli login`." if gemma else ""
        click.echo(f"error: download failed: {err}.{hint}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
