"""`ltx2-mlx generate`: every option and every file an option names is checked before the
first model loads; the pipeline itself is looked up in `pipelines.registry`."""

import math
import re
from dataclasses import replace
from pathlib import Path

import click
import mlx.core as mx

from LTX_2_MLX.cli import main
from LTX_2_MLX.cli.commands import DTYPES, FILE, non_blank
from LTX_2_MLX.cli.options import VariadicOption, block_values, image_values, lora_values, single_lora_value
from LTX_2_MLX.pipelines.registry import PIPELINES

VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v", ".mkv")
_QUANTIZED_KINDS = {"int8", "int4"}
STRENGTH = click.FloatRange(0.0, 1.0)
EXISTING_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


def _finite(context: click.Context, parameter: click.Parameter, value: float | None) -> float | None:
    if value is not None and not math.isfinite(value):
        raise click.BadParameter(f"{value} must be a finite number", context, parameter)
    return value


def _unit(context: click.Context, parameter: click.Parameter, value: float | None) -> float | None:
    if value is not None and not 0.0 <= value <= 1.0:
        raise click.BadParameter(f"{value} must be in [0, 1]", context, parameter)
    return value


def _positive_finite(context: click.Context, parameter: click.Parameter, value: float | None) -> float | None:
    if value is not None and not (math.isfinite(value) and value > 0):
        raise click.BadParameter(f"{value} must be a positive number, e.g. 24")
    return value


def memory_budget_bytes() -> int:
    """What MLX may use: Metal's recommended working set on a Mac, 95% of a CUDA GPU's memory
    (MLX's own default limit there), physical memory on the CPU."""
    try:
        info = mx.device_info()
    except (AttributeError, RuntimeError):
        info = {}
    if "max_recommended_working_set_size" in info:
        return int(info["max_recommended_working_set_size"])
    if "total_memory" in info:
        return int(info["total_memory"] * 0.95)
    import os

    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def plan_memory(o: dict, pipeline, request, checkpoint: Path):
    """The memory plan of this generation (pipelines/memory_plan.py), before any model loads;
    refuses with what would fit unless --skip-memory-check."""
    from LTX_2_MLX.pipelines.memory_plan import PlanInputs, plan_generation

    budget = memory_budget_bytes() if o["memory_budget"] is None else int(o["memory_budget"] * 2**30)
    needs_gemma = o["embedding"] is None or (pipeline.guided and o["negative_embedding"] is None)
    inputs = PlanInputs(
        checkpoint, pipeline, request.height, request.width, request.num_frames, request.frame_rate,
        dtype=DTYPES[o["dtype"]], quantization=o["quantization"], gemma_path=o["gemma_path"] if needs_gemma else None,
        text_encoder_bits=int(o["text_encoder_bits"]) if o["text_encoder_bits"] else None,
        spatial_upscaler_path=o["spatial_upscaler_path"], generate_audio=request.generate_audio,
        keyframes=sum(image.frame_idx != 0 or pipeline.name == "keyframes" for image in request.images),
        enhance_prompt=bool(o["enhance_prompt"]),
    )  # fmt: skip
    plan = plan_generation(inputs, budget, low_memory=True if o["low_memory"] else None,
                           tiled_decode=o["tiled_decode"])  # fmt: skip
    if not plan.fits and not o["skip_memory_check"] and not o["dry_run"]:
        raise click.ClickException(plan.refusal())
    return plan


def default_output_path(prompt: str | None, seed: int) -> Path:
    """`<first words of the prompt>-<seed>.mp4` in the working directory, never an existing file."""
    stem = "-".join(re.findall(r"[a-z0-9]+", (prompt or "video").lower())[:6]) or "video"
    path, count = Path(f"{stem}-{seed}.mp4"), 1
    while path.exists():
        count += 1
        path = Path(f"{stem}-{seed}-{count}.mp4")
    return path


@main.command()
@click.option("--prompt", default=None, callback=non_blank, help="What to generate (or give --embedding).")
@click.option("--checkpoint-path", type=FILE, default=None,
              help="LTX-2 single-file checkpoint. Without it, the default model is fetched into the Hugging Face "
              "cache (once) and the distilled pipeline runs.")
@click.option("--gemma-path", type=click.Path(file_okay=False, path_type=Path),
              help="Gemma 3 12B directory (Hugging Face layout).")
@click.option("--pipeline", type=click.Choice(sorted(PIPELINES)), default=None,
              help="; ".join(f"{name}: {spec.summary}" for name, spec in PIPELINES.items())
              + ". Default: one-stage with --checkpoint-path, distilled with the default model.")
@click.option("--output-path", type=FILE, default=None,
              help=f"The video to write ({', '.join(VIDEO_SUFFIXES)}); default: <prompt words>-<seed>.mp4 here.")
@click.option("--negative-prompt", default=None, help="Guided pipelines; defaults to the reference's negative prompt.")
@click.option("--embedding", type=EXISTING_FILE, default=None,
              help="Prompt embeddings written by `ltx2-mlx encode-prompt`, used instead of --prompt.")
@click.option("--negative-embedding", type=EXISTING_FILE, default=None,
              help="Negative-prompt embeddings from `ltx2-mlx encode-prompt`.")
@click.option("--height", type=click.IntRange(min=1), default=None,
              help="Pixels; a multiple of 32 (one-stage, retake) or 64 (the two-stage pipelines). Default as the "
              "reference: 512, and 1024 for the two-stage pipelines (1088 for two-stage-hq).")
@click.option("--width", type=click.IntRange(min=1), default=None,
              help="Pixels; multiple of 32 or 64, as --height. Default 768, and 1536 for the two-stage pipelines "
              "(1920 for two-stage-hq).")
@click.option("--num-frames", type=click.IntRange(min=1), default=None, help="8k+1 frames, e.g. 121 (the default).")
@click.option("--frame-rate", type=float, default=None, callback=_positive_finite, help="Frames per second (24).")
@click.option("--num-inference-steps", type=click.IntRange(min=1), default=None,
              help="Guided pipelines' first stage (40 for LTX-2, 30 for LTX-2.3).")
@click.option("--seed", type=click.IntRange(0, 2**64 - 1), default=None, help="Noise seed, 0 to 2**64-1 (10).")
@click.option("--image", "images", cls=VariadicOption, min_values=3, max_values=4, multiple=True,
              callback=image_values, metavar="PATH FRAME STRENGTH [CRF]",
              help="Condition on an image at a pixel frame (0 = first frame), strength in [0, 1], and the H.264 "
              "CRF it is re-encoded at first (0-51, 0: not re-encoded; default 33, as the reference); repeatable.")
@click.option("--lora", "loras", cls=VariadicOption, min_values=1, max_values=2, multiple=True,
              callback=lora_values, metavar="PATH [STRENGTH]",
              help="Fuse a LoRA into the transformer (Lightricks, ComfyUI, kohya or diffusers layout), strength "
              "1.0 unless given; repeatable.")
@click.option("--spatial-upscaler-path", type=EXISTING_FILE,
              help="Latent x2 upscaler file, for two-stage, two-stage-hq, distilled, keyframes, ic-lora and a2vid.")
@click.option("--distilled-lora", cls=VariadicOption, min_values=1, max_values=2, multiple=True,
              callback=single_lora_value, metavar="PATH [STRENGTH]",
              help="The distilled LoRA fused in the second stage of two-stage, keyframes and a2vid, and of "
              "two-stage-hq (the reference's 0.5 there); strength 1.0 unless given, as the reference.")
@click.option("--distilled-lora-strength-stage-1", type=float, default=None,
              help="two-stage-hq: the distilled LoRA's strength in stage 1 (the reference's 0.25).")
@click.option("--distilled-lora-strength-stage-2", type=float, default=None,
              help="two-stage-hq: the distilled LoRA's strength in stage 2 (the reference's 0.5; overrides the "
              "strength given with --distilled-lora).")
@click.option("--no-audio", is_flag=True,
              help="Generate the video alone: the DiT skips its audio stream, no audio is decoded; a silent mp4.")
@click.option("--video-cfg-guidance-scale", type=float, default=None, callback=_finite,
              help="Guided pipelines: classifier-free guidance on the video (3.0; 1.0 turns it off).")
@click.option("--video-stg-guidance-scale", type=float, default=None, callback=_finite,
              help="Spatio-temporal guidance on the video (1.0; 0 turns it off).")
@click.option("--video-rescale-scale", type=float, default=None, callback=_unit,
              help="How far the guided video prediction is rescaled to the conditional one's spread, in [0, 1] (0.7).")
@click.option("--video-stg-blocks", cls=VariadicOption, min_values=1, multiple=True, callback=block_values,
              metavar="N [N ...]", help="The blocks whose self-attention STG skips for the video (29 for LTX-2, 28 "
              "for LTX-2.3).")
@click.option("--video-skip-step", type=click.IntRange(min=0), default=None,
              help="Guide the video only every (N+1)-th step, reusing the last guided prediction between (0).")
@click.option("--a2v-guidance-scale", type=float, default=None, callback=_finite,
              help="Modality guidance of the video by the audio (3.0; 1.0 turns it off).")
@click.option("--audio-cfg-guidance-scale", type=float, default=None, callback=_finite,
              help="Classifier-free guidance on the audio (7.0).")
@click.option("--audio-stg-guidance-scale", type=float, default=None, callback=_finite,
              help="Spatio-temporal guidance on the audio (1.0).")
@click.option("--audio-rescale-scale", type=float, default=None, callback=_unit,
              help="As --video-rescale-scale, for the audio (0.7).")
@click.option("--audio-stg-blocks", cls=VariadicOption, min_values=1, multiple=True, callback=block_values,
              metavar="N [N ...]", help="As --video-stg-blocks, for the audio.")
@click.option("--audio-skip-step", type=click.IntRange(min=0), default=None, help="As --video-skip-step (0).")
@click.option("--v2a-guidance-scale", type=float, default=None, callback=_finite,
              help="Modality guidance of the audio by the video (3.0).")
@click.option("--video-conditioning", type=(EXISTING_FILE, STRENGTH), multiple=True, metavar="PATH STRENGTH",
              help="ic-lora: a reference video (depth, pose, edges...); repeatable.")
@click.option("--conditioning-attention-strength", type=STRENGTH, default=None,
              help="ic-lora: how strongly the generated tokens attend to the reference video (1.0).")
@click.option("--conditioning-attention-mask", type=(EXISTING_FILE, STRENGTH), default=None,
              metavar="MASK STRENGTH",
              help="ic-lora: a grayscale mask video (white: follow the reference, black: ignore it) times a strength, "
              "instead of --conditioning-attention-strength.")
@click.option("--skip-stage-2", is_flag=True,
              help="ic-lora: stop after the first stage; the video is written at half the size.")
@click.option("--video-path", type=EXISTING_FILE, default=None,
              help="retake, extend: the clip to change (its size, 8k+1 frame count and frame rate are kept).")
@click.option("--start-time", type=float, default=None, help="retake: start of the range to regenerate, seconds.")
@click.option("--end-time", type=float, default=None, help="retake: end of the range to regenerate, seconds.")
@click.option("--keep-video", is_flag=True, help="retake: keep the clip's video whole (regenerate audio only).")
@click.option("--keep-audio", is_flag=True, help="retake: keep the clip's audio whole (regenerate video only).")
@click.option("--extend-frames", type=click.IntRange(min=1), default=None,
              help="extend: how many frames to add after the clip --video-path, a multiple of 8.")
@click.option("--audio-path", type=EXISTING_FILE, default=None,
              help="a2vid: the audio (or a video with sound) to generate the video to; it is muxed into the output.")
@click.option("--audio-start-time", type=click.FloatRange(min=0.0), default=0.0,
              help="a2vid: where in --audio-path to start, seconds (0).")
@click.option("--audio-max-duration", type=float, default=None, callback=_positive_finite,
              help="a2vid: how many seconds of audio to read; default: the video's duration.")
@click.option("--enhance-prompt", is_flag=True, help="Let Gemma rewrite the prompt first.")
@click.option("--dtype", type=click.Choice(sorted(DTYPES)), default="bfloat16", show_default=True)
@click.option("--quantization", type=click.Choice(["fp8", "int8", "int4"]), default=None,
              help="Quantize the transformer's block weights while loading (less memory).")
@click.option("--text-encoder-bits", type=click.Choice(["8", "4"]), default=None,
              help="Quantize Gemma while loading (int8/int4) to save memory.")
@click.option("--tiled-decode/--no-tiled-decode", default=True, show_default=True,
              help="Decode the video in overlapping tiles, chunk by chunk (less memory).")
@click.option("--skip-memory-check", is_flag=True, help="Try even when the memory plan says it will not fit.")
@click.option("--low-memory", is_flag=True,
              help="Stream the transformer's blocks from the checkpoint one at a time (the next one read ahead) "
              "instead of holding them all; chosen by itself when only that fits the memory budget.")
@click.option("--memory-budget", type=float, default=None, callback=_positive_finite, metavar="GB",
              help="GiB the generation may use (default: what MLX may use on this machine); the plan picks "
              "streaming and decode tiles that fit, or says what would.")
@click.option("--dry-run", is_flag=True, help="Print the memory plan and stop: no model loads, nothing is written.")
@click.option("--eval-blocks", type=click.IntRange(min=1), default=None, metavar="N",
              help="Evaluate the transformer every N blocks and Gemma every N layers (default: every block; Gemma "
              "as one graph, or every layer with --low-memory). 1 keeps each GPU command short, for macOS's "
              "watchdog (see README).")
@click.option("--parallel", type=click.Choice(["guidance", "tensor"]), default=None,
              help="Under `mlx.launch`: share the DiT's work with the other processes. guidance: each holds the "
              "whole DiT and runs a share of each guided step's passes; tensor: each holds a share of every "
              "block's weights. Rank 0 writes the video.")
def generate(**options) -> None:
    """Generate a video (with audio) from a prompt, optionally conditioned on images."""
    from LTX_2_MLX.distributed import checked_on_every_rank, is_writer
    from LTX_2_MLX.model.video_vae import TilingConfig
    from LTX_2_MLX.pipelines.media_io import write_video

    group, (pipeline, request, ledger, output_path) = checked_on_every_rank(options, prepare_generation)
    if not is_writer(group):
        ledger.report = lambda message: None
    plan = getattr(ledger, "memory_plan", None)
    chosen = plan is not None and (options["memory_budget"] is not None or plan.low_memory)
    if is_writer(group) and (options["dry_run"] or chosen):  # the table on stdout for --dry-run
        click.echo(plan.table(), err=not options["dry_run"])
    if is_writer(group) and options["enhance_prompt"] and plan is not None and plan.text_encoder_low_memory:
        click.echo("note: --enhance-prompt with the models streamed reads all of Gemma's layers again for every "
                   "token it writes (slow where Gemma does not fit in memory): enhance once without --low-memory, "
                   "at --text-encoder-bits 4 if need be, and pass the result as --prompt", err=True)  # fmt: skip
    if options["dry_run"]:
        return
    tiling = plan.tiling_config() if plan is not None else (TilingConfig.default() if options["tiled_decode"] else None)
    previous_limit = mx.set_memory_limit(plan.memory_limit) if plan is not None else None
    try:
        result = pipeline(ledger, tiling)(request)
        if is_writer(group):  # the frames decode as they are written
            write_video(output_path, result.frames, result.fps, result.audio)
            click.echo(f"wrote {output_path}")
        else:  # meanwhile this process decodes its share of the tiles
            for _ in result.frames:
                pass
    finally:
        if previous_limit is not None:
            mx.set_memory_limit(previous_limit)


def _guider_params(defaults, o: dict, stream: str, modality_option: str):
    """The pipeline's guidance for one stream with the options given for it."""
    given = {
        "cfg_scale": o[f"{stream}_cfg_guidance_scale"], "stg_scale": o[f"{stream}_stg_guidance_scale"],
        "rescale_scale": o[f"{stream}_rescale_scale"], "stg_blocks": o[f"{stream}_stg_blocks"],
        "skip_step": o[f"{stream}_skip_step"], "modality_scale": o[modality_option],
    }  # fmt: skip
    return replace(defaults, **{key: value for key, value in given.items() if value is not None})


def _guidance_options(stream: str) -> list[str]:
    modality = "a2v_guidance_scale" if stream == "video" else "v2a_guidance_scale"
    return [f"{stream}_{name}" for name in ("cfg_guidance_scale", "stg_guidance_scale", "rescale_scale",
                                            "stg_blocks", "skip_step")] + [modality]  # fmt: skip


def prepare_generation(options: dict):
    """Check everything `generate` was given, without loading a model; return the pipeline
    class, the request, the model ledger and the output path."""
    from LTX_2_MLX.loader.checkpoint import read_config, read_metadata
    from LTX_2_MLX.loader.convert import check_output_path
    from LTX_2_MLX.loader.lora import check_lora_file
    from LTX_2_MLX.loader.text_encoder import check_prompt_embeddings, check_text_encoder_dir
    from LTX_2_MLX.loader.transformer import transformer_config
    from LTX_2_MLX.loader.upscaler import check_upscaler_file
    from LTX_2_MLX.pipelines.common import DEFAULT_NEGATIVE_PROMPT
    from LTX_2_MLX.pipelines.media_io import check_image_file, check_video_file
    from LTX_2_MLX.pipelines.model_ledger import ModelLedger
    from LTX_2_MLX.pipelines.request import DEFAULT_IMAGE_CRF, GenerationRequest, ImageConditioningInput

    o = dict(options)
    if o["prompt"] is None and o["embedding"] is None:
        raise click.UsageError('give --prompt "what to generate", or --embedding FILE from `ltx2-mlx encode-prompt`')
    if o["prompt"] is not None and o["embedding"] is not None:
        raise click.UsageError("give --prompt or --embedding, not both")
    if o["enhance_prompt"] and o["embedding"] is not None:
        raise click.UsageError("--enhance-prompt rewrites the prompt text: it cannot apply to --embedding")
    use_default_model = o["checkpoint_path"] is None
    pipeline = PIPELINES[o["pipeline"] or ("distilled" if use_default_model else "one-stage")]
    name = f"--pipeline {pipeline.name}"
    needs_gemma = o["embedding"] is None or (pipeline.guided and o["negative_embedding"] is None)
    if use_default_model:
        o.update(_default_model_files(pipeline.name, needs_gemma and o["gemma_path"] is None, o))
    checkpoint = o["checkpoint_path"]

    config = transformer_config(checkpoint)  # the file, its config and its DiT, from the header alone
    if o["parallel"] is not None:
        from LTX_2_MLX.distributed import check_parallel_mode

        check_parallel_mode(o["parallel"], pipeline.guided, config, pipeline.name)
    read_config(checkpoint, "vae", what="video VAE")
    defaults = pipeline.params(checkpoint)
    default_height, default_width = defaults.size(pipeline.two_stage)
    seed = defaults.seed if o["seed"] is None else o["seed"]
    guidance_given = [key for key in _guidance_options("video") + _guidance_options("audio") if o[key] is not None]
    if guidance_given and not pipeline.guided:
        raise click.UsageError(f"{name} is unguided: drop --{guidance_given[0].replace('_', '-')}")
    audio_guidance = [key for key in _guidance_options("audio") if o[key] is not None]
    if audio_guidance and (o["no_audio"] or pipeline.needs_audio):
        why = "--no-audio generates no audio" if o["no_audio"] else f"{name} takes the audio as given"
        raise click.UsageError(f"{why}: drop --{audio_guidance[0].replace('_', '-')}")
    for key in ("video_stg_blocks", "audio_stg_blocks"):
        outside = [block for block in o[key] or () if block >= config.num_layers]
        if outside:
            raise click.UsageError(
                f"--{key.replace('_', '-')} {outside[0]}: this transformer has blocks 0 to {config.num_layers - 1}"
            )
    distilled_lora = o["distilled_lora"]
    if o["distilled_lora_strength_stage_2"] is not None:
        if distilled_lora is None or pipeline.name != "two-stage-hq":
            raise click.UsageError(f"{name} does not use --distilled-lora-strength-stage-2; drop it")
        distilled_lora = (distilled_lora[0], o["distilled_lora_strength_stage_2"])
    mask = o["conditioning_attention_mask"]
    if mask is not None and o["conditioning_attention_strength"] is not None:
        raise click.UsageError("--conditioning-attention-mask carries its own strength: drop --conditioning-attention-strength")
    request = GenerationRequest(
        prompt=o["prompt"] or "", seed=seed,
        height=o["height"] or default_height, width=o["width"] or default_width,
        num_frames=o["num_frames"] or defaults.num_frames, frame_rate=o["frame_rate"] or defaults.frame_rate,
        negative_prompt=DEFAULT_NEGATIVE_PROMPT if o["negative_prompt"] is None else o["negative_prompt"],
        num_inference_steps=o["num_inference_steps"] or defaults.num_inference_steps,
        video_guider_params=_guider_params(defaults.video_guider_params, o, "video", "a2v_guidance_scale"),
        audio_guider_params=_guider_params(defaults.audio_guider_params, o, "audio", "v2a_guidance_scale"),
        images=tuple(ImageConditioningInput(path, frame, strength, DEFAULT_IMAGE_CRF if crf is None else crf)
                     for path, frame, strength, crf in o["images"]),
        enhance_prompt=o["enhance_prompt"], generate_audio=not o["no_audio"], distilled_lora=distilled_lora,
        **({"distilled_lora_strength_stage_1": o["distilled_lora_strength_stage_1"]}
           if o["distilled_lora_strength_stage_1"] is not None else {}),
        video_conditioning=tuple((str(path), strength) for path, strength in o["video_conditioning"]),
        conditioning_attention_strength=(1.0 if o["conditioning_attention_strength"] is None
                                         else o["conditioning_attention_strength"]),
        conditioning_attention_mask=(str(mask[0]), mask[1]) if mask is not None else None,
        skip_stage_2=o["skip_stage_2"],
        audio_path=str(o["audio_path"]) if o["audio_path"] else None, audio_start_time=o["audio_start_time"],
        audio_max_duration=o["audio_max_duration"],
        source_video=str(o["video_path"]) if o["video_path"] else None, start_time=o["start_time"],
        end_time=o["end_time"], regenerate_video=not o["keep_video"], regenerate_audio=not o["keep_audio"],
        extend_frames=o["extend_frames"] or 0,
    )  # fmt: skip
    if pipeline.needs_source_video:
        given = [f"--{key.replace('_', '-')}" for key in ("height", "width", "num_frames", "frame_rate") if o[key]]
        if given:
            raise click.UsageError(f"{name} keeps the clip's size, frames and rate; drop {given[0]}")
    request = pipeline.with_source_video(request)
    pipeline.check(request, o["spatial_upscaler_path"] is not None, len(o["loras"]))
    if o["distilled_lora_strength_stage_1"] is not None and pipeline.name != "two-stage-hq":
        raise click.UsageError(f"{name} does not use --distilled-lora-strength-stage-1; drop it")
    if not pipeline.guided and (o["negative_prompt"] is not None or o["negative_embedding"] is not None):
        raise click.UsageError(f"{name} is unguided: it uses no negative prompt; drop it")
    if not pipeline.guided and o["num_inference_steps"] is not None:
        raise click.UsageError(f"{name} has a fixed distilled schedule; drop --num-inference-steps")
    if needs_gemma and o["gemma_path"] is None:
        raise click.UsageError(
            "--gemma-path is required to encode the prompts (the Gemma 3 12B directory), unless --embedding"
            + (" and --negative-embedding are" if pipeline.guided else " is") + " given"
        )

    stored_quantization = read_metadata(checkpoint).get("quantization")
    if stored_quantization and o["quantization"]:
        raise click.UsageError(f"{checkpoint} is already quantized; drop --quantization {o['quantization']}")
    loras = list(o["loras"])
    all_loras = loras + ([distilled_lora] if distilled_lora else [])
    if all_loras and (o["quantization"] in _QUANTIZED_KINDS or _affine_mode(stored_quantization)):
        raise click.UsageError(
            "LoRAs cannot be fused into int8/int4 weights: use the bf16 checkpoint (with --quantization to quantize "
            "after fusing), or fuse them when quantizing: ltx2-mlx quantize SRC DST --mode int8 --lora PATH STRENGTH"
        )
    for path, _ in all_loras:
        check_lora_file(path, config)
    if o["spatial_upscaler_path"] is not None:
        check_upscaler_file(o["spatial_upscaler_path"])
    for image in request.images:
        check_image_file(image.path)
    for path, _ in request.video_conditioning:
        check_video_file(path)
    if mask is not None:
        check_video_file(mask[0])
    if request.audio_path is not None:
        _check_audio(request)
    for path in (o["embedding"], o["negative_embedding"]):
        if path is not None:
            check_prompt_embeddings(path, checkpoint)
    if needs_gemma:
        check_text_encoder_dir(o["gemma_path"])
    inputs = [checkpoint, o["spatial_upscaler_path"], o["embedding"], o["negative_embedding"],
              *(path for path, _ in all_loras), *(i.path for i in request.images),
              *(path for path, _ in request.video_conditioning), request.source_video, request.audio_path,
              mask[0] if mask is not None else None]  # fmt: skip
    output_path = o["output_path"] or default_output_path(o["prompt"], seed)
    check_output_path(output_path, [p for p in inputs if p is not None], VIDEO_SUFFIXES, what="video")
    plan = plan_memory(o, pipeline, request, checkpoint)
    if plan.low_memory and o["parallel"] is not None:
        why = "--low-memory" if o["low_memory"] else "the memory plan (it needs --low-memory here)"
        raise click.UsageError(f"--parallel does not combine with {why}: drop one, or give a larger --memory-budget")

    ledger = ModelLedger(
        checkpoint, o["gemma_path"], dtype=DTYPES[o["dtype"]], loras=loras,
        text_encoder_bits=int(o["text_encoder_bits"]) if o["text_encoder_bits"] else None,
        quantization=o["quantization"], spatial_upscaler_path=o["spatial_upscaler_path"],
        precomputed_embeddings=(o["embedding"], o["negative_embedding"]), report=lambda m: click.echo(m, err=True),
        parallel=o["parallel"], low_memory=plan.low_memory, text_encoder_low_memory=plan.text_encoder_low_memory,
        eval_blocks=o["eval_blocks"],
    )  # fmt: skip
    ledger.memory_plan = plan
    return pipeline, request, ledger, output_path


def _check_audio(request) -> None:
    """The audio decodes, the start is inside it, and what is read covers the video."""
    from LTX_2_MLX.pipelines.media_io import read_audio

    video_seconds = request.num_frames / request.frame_rate
    duration = request.audio_max_duration or video_seconds
    waveform, rate = read_audio(request.audio_path, request.audio_start_time, duration)
    if waveform.shape[1] < round(video_seconds * rate):
        limit = "--audio-max-duration" if duration < video_seconds else "the file"
        raise ValueError(
            f"{request.audio_path} from {request.audio_start_time:g} s gives {waveform.shape[1] / rate:.2f} s of audio "
            f"(cut by {limit}) but the video lasts {video_seconds:.2f} s ({request.num_frames} frames at "
            f"{request.frame_rate:g} fps): give longer audio, an earlier --audio-start-time or fewer --num-frames"
        )


def _affine_mode(stored_quantization: str | None) -> bool:
    import json

    return bool(stored_quantization) and json.loads(stored_quantization).get("mode") in _QUANTIZED_KINDS


def _default_model_files(pipeline: str, need_gemma: bool, options: dict) -> dict:
    """The default model's files from the Hugging Face cache, fetched first if missing."""
    from LTX_2_MLX.loader.hub import DEFAULT_MODEL, resolve_default_model

    if pipeline != DEFAULT_MODEL.pipeline:
        raise click.UsageError(
            f"--pipeline {pipeline} needs its own checkpoint: pass --checkpoint-path "
            f"(the default model runs --pipeline {DEFAULT_MODEL.pipeline})"
        )
    files = resolve_default_model(need_gemma=need_gemma, echo=lambda m: click.echo(m, err=True))
    chosen = {"checkpoint_path": files.checkpoint_path}
    if options["spatial_upscaler_path"] is None:
        chosen["spatial_upscaler_path"] = files.spatial_upscaler_path
    if need_gemma:
        chosen["gemma_path"] = files.gemma_path
    return chosen
