"""The `ltx2-mlx` command."""

import sys
from pathlib import Path

import click
import mlx.core as mx

from LTX_2_MLX.loader.checkpoint import CheckpointError, read_config, tensor_names

DTYPES = {"float32": mx.float32, "float16": mx.float16, "bfloat16": mx.bfloat16}


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


@click.group()
def main() -> None:
    """LTX-2 audio-video generation in MLX."""


@main.command()
@click.argument("checkpoint", type=click.Path(dir_okay=False, path_type=Path))
def inspect(checkpoint: Path) -> None:
    """Report what an LTX-2 checkpoint holds, and load its transformer to check it."""
    from mlx.utils import tree_flatten

    from LTX_2_MLX.loader import load_transformer

    try:
        config = read_config(checkpoint)
        names = tensor_names(checkpoint)
        click.echo(f"{checkpoint}: {len(names)} tensors; config sections: {', '.join(sorted(config)) or '(none)'}")
        if "transformer" in config:
            model = load_transformer(checkpoint, dtype=mx.bfloat16)
            c = model.config
            count = sum(p.size for _, p in tree_flatten(model.parameters()))
            click.echo(
                f"transformer: {c.model_type.value}, {c.num_layers} layers, width {c.inner_dim}"
                + (f" (audio {c.audio_inner_dim})" if c.model_type.has_audio else "")
                + f", {count / 1e9:.2f} B parameters, rope {c.rope_type.value}"
                + f", LTX-2.{'3' if c.caption_proj_before_connector else '0'} layout"
            )
    except CheckpointError as err:
        _fail(str(err))


@main.command()
@click.argument("source", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("destination", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--dtype", type=click.Choice(sorted(DTYPES)), default="bfloat16", show_default=True)
def convert(source: Path, destination: Path, dtype: str) -> None:
    """Write SOURCE's tensors in another dtype to DESTINATION (same layout and config)."""
    from LTX_2_MLX.loader.convert import convert_checkpoint

    try:
        read_config(source)
        count = convert_checkpoint(source, destination, DTYPES[dtype])
    except CheckpointError as err:
        _fail(str(err))
    click.echo(f"wrote {destination} ({count} tensors, {dtype})")


if __name__ == "__main__":
    main()
