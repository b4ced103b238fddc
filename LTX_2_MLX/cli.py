"""The `ltx2-mlx` command."""

import math
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


@main.command()
@click.argument("source", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("destination", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--mode", type=click.Choice(["fp8", "int8", "int4"]), required=True)
@click.option("--lora", "loras", type=(str, float), multiple=True, metavar="PATH STRENGTH",
              help="LoRAs to fuse before writing; repeatable.")  # fmt: skip
def quantize(source: Path, destination: Path, mode: str, loras) -> None:
    """Write SOURCE's transformer quantized to DESTINATION (loads with load_transformer)."""
    from LTX_2_MLX.loader import load_transformer
    from LTX_2_MLX.pipelines.model_ledger import prepare_transformer
    from LTX_2_MLX.quantization import save_quantized_transformer

    try:
        model = prepare_transformer(load_transformer(source, dtype=mx.bfloat16), list(loras), mode)
        save_quantized_transformer(model, destination, read_config(source))
    except (CheckpointError, ValueError) as err:
        _fail(str(err))
    click.echo(f"wrote {destination} ({mode})")


@main.command("encode-prompt")
@click.option("--checkpoint-path", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--gemma-path", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--prompt", required=True)
@click.option("--output-path", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--text-encoder-bits", type=click.Choice(["8", "4"]), default=None)
@click.option("--dtype", type=click.Choice(sorted(DTYPES)), default="bfloat16", show_default=True,
              help="The dtype `generate` will run in.")
def encode_prompt(checkpoint_path, gemma_path, prompt, output_path, text_encoder_bits, dtype) -> None:
    """Encode a prompt once (Gemma + the checkpoint's connectors) for `generate --embedding`."""
    from LTX_2_MLX.loader.text_encoder import encode_prompts
    from LTX_2_MLX.model.text_encoder import save_prompt_embeddings

    try:
        bits = int(text_encoder_bits) if text_encoder_bits else None
        ((video_context, audio_context, mask),) = encode_prompts(
            [prompt], gemma_path, checkpoint_path, quantize_bits=bits, dtype=DTYPES[dtype]
        )
        save_prompt_embeddings(output_path, video_context, audio_context, mask, prompt)
    except (CheckpointError, ValueError) as err:
        _fail(str(err))
    click.echo(f"wrote {output_path}")


def _memory_budget_bytes() -> int:
    """What MLX may use: Metal's recommended working set on a Mac, physical memory elsewhere."""
    try:
        return int(mx.device_info()["max_recommended_working_set_size"])
    except (AttributeError, KeyError, RuntimeError):
        import os

        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


# Bytes per block weight: int4/int8 carry a scale and bias per group of 64.
_BYTES_PER_WEIGHT = {"fp8": 1.0, "int8": 1.0 + 4 / 64, "int4": 0.5 + 4 / 64}


def _check_memory(checkpoint: Path, dtype: mx.Dtype, quantization: str | None) -> None:
    """Refuse up front when the DiT's weights alone would not fit, naming what to do instead."""
    from LTX_2_MLX.loader.checkpoint import tensor_shapes

    elements = sum(math.prod(shape) for k, shape in tensor_shapes(checkpoint).items() if k.startswith("model.diffusion_model."))
    needed = elements * _BYTES_PER_WEIGHT.get(quantization, dtype.size) * 1.15  # + activations at 768x512x121
    budget = _memory_budget_bytes()
    if needed > budget:
        raise click.ClickException(
            f"the transformer needs about {needed / 2**30:.0f} GiB in {dtype} but about {budget / 2**30:.0f} GiB "
            "is available to MLX. Quantize it (--quantization fp8, int8 or int4), use a machine with more "
            "memory, or pass --skip-memory-check to try anyway."
        )


@main.command()
@click.option("--checkpoint-path", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="LTX-2 single-file checkpoint (e.g. weights/ltx-2-19b-dev.safetensors).")
@click.option("--gemma-path", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Gemma 3 12B directory (Hugging Face layout).")
@click.option("--pipeline", type=click.Choice(["one-stage", "two-stage", "distilled", "keyframes", "ic-lora"]),
              default="one-stage", show_default=True,
              help="one-stage: guided, at full size. two-stage: guided at half size, upscaled and refined with the "
              "distilled LoRA. distilled: a distilled checkpoint, 8+3 unguided steps. keyframes: two-stage, every "
              "--image guiding as a keyframe (interpolation between them). ic-lora: a distilled checkpoint steered "
              "by --video-conditioning through the IC-LoRA given with --lora.")
@click.option("--video-conditioning", type=(str, float), multiple=True, metavar="PATH STRENGTH",
              help="ic-lora: a reference video (depth, pose, edges...); repeatable.")
@click.option("--conditioning-attention-strength", type=click.FloatRange(0.0, 1.0), default=1.0, show_default=True,
              help="ic-lora: how strongly the generated tokens attend to the reference video.")
@click.option("--spatial-upscaler-path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Latent x2 upscaler file, for two-stage and distilled.")
@click.option("--distilled-lora", type=(str, float), default=None, metavar="PATH STRENGTH",
              help="The distilled LoRA fused in two-stage's second stage.")
@click.option("--prompt", default=None, help="What to generate (or give --embedding).")
@click.option("--negative-prompt", default=None, help="Defaults to the reference's negative prompt.")
@click.option("--embedding", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Prompt embeddings written by `ltx2-mlx encode-prompt`, used instead of --prompt.")
@click.option("--negative-embedding", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Negative-prompt embeddings from `ltx2-mlx encode-prompt`.")
@click.option("--output-path", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--height", type=int, default=None, help="Multiple of 32 (default from the checkpoint's version).")
@click.option("--width", type=int, default=None, help="Multiple of 32.")
@click.option("--num-frames", type=int, default=None, help="8k+1 frames, e.g. 121.")
@click.option("--frame-rate", type=float, default=None)
@click.option("--num-inference-steps", type=int, default=None)
@click.option("--seed", type=int, default=None)
@click.option("--image", "images", type=(str, int, float), multiple=True, metavar="PATH FRAME STRENGTH",
              help="Condition on an image at a pixel frame (0 = first frame); repeatable.")
@click.option("--lora", "loras", type=(str, float), multiple=True, metavar="PATH STRENGTH")
@click.option("--enhance-prompt", is_flag=True, help="Let Gemma rewrite the prompt first.")
@click.option("--dtype", type=click.Choice(sorted(DTYPES)), default="bfloat16", show_default=True)
@click.option("--quantization", type=click.Choice(["fp8", "int8", "int4"]), default=None,
              help="Quantize the transformer's block weights while loading (less memory).")
@click.option("--text-encoder-bits", type=click.Choice(["8", "4"]), default=None,
              help="Quantize Gemma while loading (int8/int4) to save memory.")
@click.option("--tiled-decode/--no-tiled-decode", default=True, show_default=True,
              help="Decode the video in overlapping tiles, chunk by chunk (less memory).")
@click.option("--skip-memory-check", is_flag=True)
def generate(checkpoint_path, gemma_path, pipeline, video_conditioning, conditioning_attention_strength,
             spatial_upscaler_path, distilled_lora, prompt, negative_prompt, embedding, negative_embedding, output_path, height, width, num_frames, frame_rate,
             num_inference_steps, seed, images, loras, enhance_prompt, dtype, quantization, text_encoder_bits,
             tiled_decode, skip_memory_check) -> None:  # fmt: skip
    """Generate a video (with audio) from a prompt, optionally conditioned on images."""
    from LTX_2_MLX.model.video_vae import TilingConfig
    from LTX_2_MLX.pipelines.ic_lora import ICLoraPipeline
    from LTX_2_MLX.pipelines.common import (
        DEFAULT_NEGATIVE_PROMPT,
        ImageConditioningInput,
        check_generation_size,
        detect_params,
    )
    from LTX_2_MLX.pipelines.media_io import write_video
    from LTX_2_MLX.pipelines.model_ledger import ModelLedger
    from LTX_2_MLX.pipelines.ti2vid_one_stage import TI2VidOneStagePipeline
    from LTX_2_MLX.pipelines.two_stage import DistilledPipeline, KeyframeInterpolationPipeline, TI2VidTwoStagesPipeline

    try:
        defaults = detect_params(checkpoint_path)
        height, width = height or defaults.height, width or defaults.width
        num_frames, frame_rate = num_frames or defaults.num_frames, frame_rate or defaults.frame_rate
        check_generation_size(height, width, num_frames, divisor=32 if pipeline == "one-stage" else 64)
        if pipeline != "one-stage" and spatial_upscaler_path is None:
            raise click.ClickException(f"--pipeline {pipeline} needs --spatial-upscaler-path")
        if pipeline in ("two-stage", "keyframes") and distilled_lora is None:
            raise click.ClickException(f"--pipeline {pipeline} needs --distilled-lora PATH STRENGTH")
        if pipeline == "ic-lora" and not (video_conditioning and loras):
            raise click.ClickException("--pipeline ic-lora needs --video-conditioning PATH STRENGTH and the IC-LoRA (--lora)")
        for path, _ in video_conditioning:
            if not Path(path).is_file():
                raise click.ClickException(f"--video-conditioning {path}: no such file")
        if pipeline == "keyframes" and len(images) < 2:
            raise click.ClickException("--pipeline keyframes needs at least two --image PATH FRAME STRENGTH")
        for path, frame, _ in images:
            if not Path(path).is_file():
                raise click.ClickException(f"--image {path}: no such file")
            if not 0 <= frame < num_frames:
                raise click.ClickException(f"--image {path} {frame}: the frame must be in [0, {num_frames - 1}]")
        if prompt is None and embedding is None:
            raise click.ClickException("give --prompt TEXT, or --embedding FILE from `ltx2-mlx encode-prompt`")
        guided = pipeline not in ("distilled", "ic-lora")
        if gemma_path is None and (embedding is None or (guided and negative_embedding is None)):
            raise click.ClickException(
                "--gemma-path is required to encode the prompts (the Gemma 3 12B directory), "
                "unless --embedding" + (" and --negative-embedding are" if guided else " is") + " given"
            )
        if not skip_memory_check:
            _check_memory(checkpoint_path, DTYPES[dtype], quantization)
        ledger = ModelLedger(
            checkpoint_path, gemma_path, dtype=DTYPES[dtype], loras=list(loras),
            text_encoder_bits=int(text_encoder_bits) if text_encoder_bits else None, quantization=quantization,
            spatial_upscaler_path=spatial_upscaler_path, precomputed_embeddings=(embedding, negative_embedding),
        )  # fmt: skip
        tiling = TilingConfig.default() if tiled_decode else None
        shared = dict(
            prompt=prompt or "", seed=defaults.seed if seed is None else seed, height=height, width=width,
            num_frames=num_frames, frame_rate=frame_rate, enhance_prompt=enhance_prompt,
            images=[ImageConditioningInput(path, frame, strength) for path, frame, strength in images],
        )  # fmt: skip
        guidance = dict(
            negative_prompt=DEFAULT_NEGATIVE_PROMPT if negative_prompt is None else negative_prompt,
            num_inference_steps=num_inference_steps or defaults.num_inference_steps,
            video_guider_params=defaults.video_guider_params, audio_guider_params=defaults.audio_guider_params,
        )  # fmt: skip
        if pipeline == "distilled":
            result = DistilledPipeline(ledger, tiling)(**shared)
        elif pipeline == "ic-lora":
            result = ICLoraPipeline(ledger, tiling)(
                **shared, video_conditioning=list(video_conditioning),
                conditioning_attention_strength=conditioning_attention_strength,
            )  # fmt: skip
        elif pipeline in ("two-stage", "keyframes"):
            kind = KeyframeInterpolationPipeline if pipeline == "keyframes" else TI2VidTwoStagesPipeline
            result = kind(ledger, [distilled_lora], tiling)(**shared, **guidance)
        else:
            result = TI2VidOneStagePipeline(ledger, tiling)(**shared, **guidance)
        write_video(output_path, result.frames, result.fps, result.audio)
    except (CheckpointError, ValueError) as err:
        _fail(str(err))
    click.echo(f"wrote {output_path}")


if __name__ == "__main__":
    main()
