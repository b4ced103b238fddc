"""`ltx2-mlx inspect`, `convert`, `quantize` and `encode-prompt`: checkpoint tools. Every file
argument is checked before anything loads, and outputs are written atomically."""

from pathlib import Path

import click
import mlx.core as mx

from LTX_2_MLX.cli import main
from LTX_2_MLX.loader.checkpoint import Checkpoint

DTYPES = {"float32": mx.float32, "float16": mx.float16, "bfloat16": mx.bfloat16}
FILE = click.Path(dir_okay=False, path_type=Path)


def non_blank(context: click.Context, parameter: click.Parameter, value: str | None) -> str | None:
    if value is not None and not value.strip():
        raise click.BadParameter('is empty; describe what to generate, e.g. "A red fox runs through fresh snow"')
    return value


@main.command()
@click.argument("checkpoint", type=FILE)
def inspect(checkpoint: Path) -> None:
    """Report what an LTX-2 checkpoint holds, and load its transformer to check it."""
    from mlx.utils import tree_flatten

    from LTX_2_MLX.quantization import load_transformer_as_stored

    opened = Checkpoint.open(checkpoint)
    config = opened.config()
    click.echo(f"{checkpoint}: {len(opened.entries)} tensors; config sections: {', '.join(sorted(config)) or '(none)'}")
    quantization = opened.metadata.get("quantization")
    if quantization:
        click.echo(f"quantized transformer: {quantization[:80]}")
    if "transformer" in config:
        model = load_transformer_as_stored(opened, dtype=mx.bfloat16)
        c = model.config
        count = sum(p.size for _, p in tree_flatten(model.parameters()))
        click.echo(
            f"transformer: {c.model_type.value}, {c.num_layers} layers, width {c.inner_dim}"
            + (f" (audio {c.audio_inner_dim})" if c.model_type.has_audio else "")
            + f", {count / 1e9:.2f} B stored parameters, rope {c.rope_type.value}"
            + f", LTX-2.{'3' if c.caption_proj_before_connector else '0'} layout"
        )


@main.command()
@click.argument("source", type=FILE)
@click.argument("destination", type=FILE)
@click.option("--dtype", type=click.Choice(sorted(DTYPES)), default="bfloat16", show_default=True)
def convert(source: Path, destination: Path, dtype: str) -> None:
    """Write SOURCE's tensors in another dtype to DESTINATION (same layout and config)."""
    from LTX_2_MLX.loader.convert import check_output_path, convert_checkpoint

    Checkpoint.open(source).config()
    check_output_path(destination, [source], what="converted checkpoint")
    count = convert_checkpoint(source, destination, DTYPES[dtype])
    click.echo(f"wrote {destination} ({count} tensors, {dtype})")


@main.command()
@click.argument("source", type=FILE)
@click.argument("destination", type=FILE)
@click.option("--mode", type=click.Choice(["fp8", "int8", "int4"]), required=True)
@click.option("--lora", "loras", type=(FILE, float), multiple=True, metavar="PATH STRENGTH",
              help="LoRAs to fuse before quantizing; repeatable.")  # fmt: skip
def quantize(source: Path, destination: Path, mode: str, loras) -> None:
    """Write SOURCE with its transformer quantized to DESTINATION: a complete checkpoint (the
    VAEs, vocoder and text connectors copied unchanged) that `generate --checkpoint-path` takes.
    An official fp8 SOURCE can be quantized to int8 or int4 (its fp8 layers dequantized first)."""
    from LTX_2_MLX.loader.convert import check_output_path
    from LTX_2_MLX.loader.lora import check_lora_file
    from LTX_2_MLX.loader.transformer import stored_quantization, transformer_config
    from LTX_2_MLX.quantization import load_prepared_transformer, save_quantized_transformer

    opened = Checkpoint.open(source)
    config = transformer_config(opened)
    stored = stored_quantization(opened)
    if stored == "fp8" and mode == "fp8":
        raise click.ClickException(f"{source}: is already fp8; use it as it is, or quantize it --mode int8 or int4.")
    if stored is not None and stored != "fp8":
        raise click.ClickException(f"{source}: is already quantized; quantize the original bf16 checkpoint instead.")
    for path, _ in loras:
        check_lora_file(path, config)
    check_output_path(destination, [source, *(path for path, _ in loras)], what="quantized checkpoint")
    model = load_prepared_transformer(opened, mx.bfloat16, list(loras), mode)
    save_quantized_transformer(model, destination, opened)
    click.echo(f"wrote {destination} (transformer in {mode}, every other part as in {source.name})")


@main.command("encode-prompt")
@click.option("--checkpoint-path", required=True, type=FILE)
@click.option("--gemma-path", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--prompt", required=True, callback=non_blank)
@click.option("--output-path", required=True, type=FILE, help="Where to write the embeddings (.safetensors).")
@click.option("--text-encoder-bits", type=click.Choice(["8", "4"]), default=None)
@click.option("--dtype", type=click.Choice(sorted(DTYPES)), default="bfloat16", show_default=True,
              help="The dtype `generate` will run in.")  # fmt: skip
def encode_prompt(checkpoint_path, gemma_path, prompt, output_path, text_encoder_bits, dtype) -> None:
    """Encode a prompt once (Gemma + the checkpoint's connectors) for `generate --embedding`."""
    from LTX_2_MLX.loader.convert import check_output_path
    from LTX_2_MLX.loader.text_encoder import check_text_encoder_dir, encode_prompts
    from LTX_2_MLX.model.text_encoder import save_prompt_embeddings

    checkpoint = Checkpoint.open(checkpoint_path)
    checkpoint.config("transformer", what="text embeddings processor")
    check_text_encoder_dir(gemma_path)
    check_output_path(output_path, [checkpoint_path], what="prompt embeddings")
    bits = int(text_encoder_bits) if text_encoder_bits else None
    ((video_context, audio_context, mask),) = encode_prompts(
        [prompt], gemma_path, checkpoint, quantize_bits=bits, dtype=DTYPES[dtype]
    )
    save_prompt_embeddings(output_path, video_context, audio_context, mask, prompt)
    click.echo(f"wrote {output_path}")
