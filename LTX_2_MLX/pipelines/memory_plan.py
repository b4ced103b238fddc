"""How much memory each phase of a generation will need, worked out before anything loads.

    plan = plan_generation(PlanInputs(checkpoint, pipeline, height=1024, width=1536, num_frames=121, ...),
                           budget=memory_budget)
    print(plan.table())

Every phase is a `PhaseEstimate`: the weights resident while it runs (from the checkpoint's
header and the Gemma directory's shard headers: shapes and stored dtypes, as they will be held
after dtype conversion and quantization) plus its activations at their peak (token counts and
widths; MLX's fused attention never holds a tokens x tokens matrix). `plan_generation` picks
the DiT's residency (all blocks, or streamed one block at a time with the next prefetched) and
the VAE's decode tiles so that the largest phase fits the budget.

The activation coefficients (`_K_*`) were measured on the CPU with `mx.get_peak_memory()` on
the tiny test models and on mid-size random configurations (tests/test_memory_plan.py;
benchmarks/end_to_end.py prints the estimate beside each measured phase). The target is the
estimate within 20% of the measured peak per phase at full size.
"""

import json
import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import mlx.core as mx

from LTX_2_MLX.loader.checkpoint import Checkpoint, staged_read_bytes
from LTX_2_MLX.model.text_encoder.feature_extractor import TOKENS_PER_CHUNK

GiB = 2**30
DIT_PREFIX = "model.diffusion_model."
BLOCK_PREFIX = DIT_PREFIX + "transformer_blocks."
# Bytes per quantized block weight: int8/int4 carry a float16 scale and bias per group of 64.
QUANTIZED_BYTES_PER_WEIGHT = {"fp8": 1.0, "int8": 1.0 + 4 / 64, "int4": 0.5 + 4 / 64}
QUANTIZATION_ORDER = ("fp8", "int8", "int4")
# Streaming holds the block being run and the next one, being read.
STREAMED_BLOCKS = 2
# Of the DiT's next block, the share resident when a streamed step peaks: it is read tensor by
# tensor while the current one runs (on an H200 the streamed stages peaked half a block under
# two whole blocks, from bf16, fp8, int8 and int4 blocks alike).
_READ_AHEAD = 0.5
# A guided step's DiT passes at most: conditional, negative prompt, STG, modality.
GUIDED_PASSES = 4
# The memory limit's distance under the budget (see MemoryPlan.memory_limit).
LIMIT_MARGIN = 0.03
# Decode tiles tried, largest first: (spatial tile pixels, temporal tile frames).
TILE_SIZES = ((512, 64), (384, 48), (256, 32))
_STORED_SIZES = {"U8": 1, "I8": 1, "BOOL": 1, "U16": 2, "I16": 2, "U32": 4, "I32": 4, "U64": 8, "I64": 8}

# Activation coefficients: bytes held at a phase's peak per (element x width) unit, in units
# of the activation dtype's size (float32 intermediates count twice). Calibrated on the CPU;
# the VAE's and the vocoder's then raised to the peaks of the full-size distilled run on an
# H200 (benchmarks/end_to_end.py, README), where they were 45-49% low, and the DiT's to its
# stage-2 peak there (6,144 tokens: 13% low at 14).
_K_DIT = 30.0  # per token x stream width: a block's q, k, v, out and GELU'd FF, and the next one's queued
_K_GEMMA_LAYER = 6.0  # per token x intermediate width, inside one Gemma layer
_K_PROCESSOR = 2.0  # per token of a chunk x all hidden states' width, float32, the feature extractor
_K_CONNECTOR = 30.0  # per prompt token x connector width, one text connector block (both: full size, CPU)
_K_UPSCALER = 6.0  # per upscaled latent voxel x mid channels
_K_VAE = 7.0  # per decoded voxel of a tile (after the patchifier) x decoder base channels
# Beyond its tiles' activations a decode holds about 0.75 of its weights again per tile in
# flight (two queued, one untiled): fitted to full-size runs on an H200 with 512- and 256-px
# tiles (4.9-5.8 and 3.4-3.7 GiB measured; weights and activations alone give 3.4 and 1.5).
# The earlier fit was a whole copy per tile, when the convolution weights were transposed views
# (copied by every call) and the load held the file's tensors beside their converted copies
# (loader.checkpoint.load_converted); runs of one command differ by up to 0.6 GiB here.
_VAE_WEIGHT_COPIES = {True: 1.5, False: 0.75}  # tiled: two tiles in flight
_K_VOCODER = 20.0  # per mel frame x channels x upsampling at the vocoder's widest stage, float32 (H200: 0.64-0.82 GiB)
# Where MLX's scaled_dot_product_attention is not fused (the CPU), it materialises the
# queries x keys scores and their softmax, in float32: this many float32 matrices per head.
# On a GPU the fused kernel holds no such matrix: the term is 0 there (see attention_scores_bytes).
_K_SCORES = 2.0


@dataclass(frozen=True)
class PhaseEstimate:
    """One phase's peak: its resident weights plus its activations, in bytes, and on CUDA the
    resident loads' read buffers (`buffers`: host memory MLX counts as its own)."""

    name: str
    weights: int
    activations: int
    detail: str = ""
    buffers: int = 0

    @property
    def peak(self) -> int:
        return self.weights + self.activations + self.buffers


@dataclass(frozen=True)
class PlanInputs:
    """What a generation asks for, as far as memory is concerned."""

    checkpoint: str | Path | Checkpoint
    pipeline: type  # a Pipeline class: two_stage says the DiT runs at half then full size
    height: int
    width: int
    num_frames: int
    frame_rate: float = 24.0
    dtype: mx.Dtype = mx.bfloat16
    quantization: str | None = None  # the DiT's, applied while loading
    gemma_path: str | Path | None = None  # None: no prompt is encoded (embeddings given)
    text_encoder_bits: int | None = None
    spatial_upscaler_path: str | Path | None = None
    generate_audio: bool = True
    keyframes: int = 0  # images guiding as keyframe tokens (each adds a latent frame of tokens)
    context_tokens: int = 1024  # Gemma's prompt length
    enhance_prompt: bool = False  # Gemma generates (held whole unless low_memory) before encoding


@dataclass(frozen=True)
class MemoryPlan:
    """The phases of one generation with the choices that make them fit (or not)."""

    phases: tuple[PhaseEstimate, ...]
    budget: int
    low_memory: bool
    tile_size: tuple[int, int] | None  # (pixels, frames) of a decode tile; None: decoded whole
    alternatives: tuple[str, ...] = field(default=())  # what would fit, when this does not
    # Gemma's layers streamed while it enhances the prompt as with low_memory, unless the plan
    # found Gemma fits whole though the DiT does not (False): see plan_generation.
    gemma_low_memory: bool | None = None

    @property
    def text_encoder_low_memory(self) -> bool:
        return self.low_memory if self.gemma_low_memory is None else self.gemma_low_memory

    @property
    def peak(self) -> PhaseEstimate:
        return max(self.phases, key=lambda phase: phase.peak)

    @property
    def fits(self) -> bool:
        return self.peak.peak <= self.budget

    @property
    def memory_limit(self) -> int:
        """What MLX is told it may use (mx.set_memory_limit): the budget, or with streaming the
        largest phase's estimate and a quarter more. Past the limit MLX waits for queued work
        to finish before allocating, so buffers of finished operations are freed first rather
        than piling up (on an H200 a tiled decode peaked at 15.6 GB unlimited, 4.5 GB at a 4 GB
        limit, and ran no slower). The limit is soft (the allocation that crosses it is made:
        a resident DiT stage peaked 1.4% over it), so it sits LIMIT_MARGIN under the budget."""
        limit = self.budget if not self.low_memory else min(self.budget, int(self.peak.peak * 1.25))
        return int(limit * (1 - LIMIT_MARGIN))

    def phase(self, name: str) -> PhaseEstimate:
        return next(phase for phase in self.phases if phase.name == name)

    def tiling_config(self):
        """The decode tiling this plan chose, for the pipeline (None: untiled)."""
        from LTX_2_MLX.model.video_vae import TilingConfig
        from LTX_2_MLX.model.video_vae.tiling import SpatialTilingConfig, TemporalTilingConfig

        if self.tile_size is None:
            return None
        pixels, frames = self.tile_size
        return TilingConfig(SpatialTilingConfig(pixels, 64), TemporalTilingConfig(frames, temporal_overlap(frames)))

    def table(self) -> str:
        """One short table: a row per phase, then the largest against the budget."""
        rows = [f"{'phase':<17} {'weights':>9} {'activations':>11} {'peak':>9}  notes"]
        for phase in self.phases:
            rows.append(
                f"{phase.name:<17} {_gib(phase.weights):>9} {_gib(phase.activations):>11} {_gib(phase.peak):>9}"
                f"  {phase.detail}" + (f", {_gib(phase.buffers)} read buffers" if phase.buffers else "")
            )
        mode = "--low-memory: DiT blocks streamed" if self.low_memory else "DiT resident"
        tiles = f"decode tiles {self.tile_size[0]} px x {self.tile_size[1]} frames" if self.tile_size else "untiled"
        verdict = "fits" if self.fits else "does NOT fit"
        rows.append(
            f"largest: {self.peak.name}, {_gib(self.peak.peak)} of a {_gib(self.budget)} budget: {verdict} "
            f"({mode}, {tiles})"
        )
        return "\n".join(rows)

    def refusal(self) -> str:
        """The one-line message when the plan does not fit, naming what would."""
        message = (
            f"this generation needs about {_gib(self.peak.peak)} at its largest phase ({self.peak.name}) but the "
            f"memory budget is {_gib(self.budget)}"
        )
        if self.alternatives:
            message += "; what would fit: " + "; or ".join(self.alternatives)
        else:
            message += "; nothing smaller fits this budget: use a machine with more memory"
        return message + " (--dry-run prints the plan; --skip-memory-check tries anyway)"


def temporal_overlap(frames: int) -> int:
    """Frames shared by consecutive decode chunks: the reference default's 24 of 64, in
    proportion and in whole latent frames (16 of 48, 8 of 32). A fixed 24 made 32-frame chunks
    advance 8 frames at a time, decoding every frame four times (4.4 s for a decode that 512-px
    tiles do in 0.57 s on an H200)."""
    return frames * 3 // 8 // 8 * 8


def _gib(nbytes: float) -> str:
    if nbytes < GiB:
        return f"{nbytes / 2**20:.1f} MiB"
    return f"{nbytes / GiB:.2f} GiB" if nbytes < 10 * GiB else f"{nbytes / GiB:.1f} GiB"


# --------------------------------------------------------------------------------------------
# Weights, from headers alone
# --------------------------------------------------------------------------------------------


def _is_float(stored: str) -> bool:
    return stored in ("F64", "F32", "F16", "BF16")


def _quantizable_weight(name: str) -> bool:
    """A DiT tensor `--quantization` converts: the weight of a layer ltx-core's fp8_cast targets."""
    from LTX_2_MLX.quantization.fp8_cast import is_fp8_cast_target

    return name.endswith(".weight") and is_fp8_cast_target(name[len(DIT_PREFIX) :].rsplit(".", 1)[0])


def _block_index(name: str) -> int | None:
    """The transformer block a DiT tensor belongs to (None: outside the blocks)."""
    return int(name[len(BLOCK_PREFIX) :].split(".", 1)[0]) if name.startswith(BLOCK_PREFIX) else None


def _resident_bytes(name: str, stored: str, count: int, dtype: mx.Dtype, quantization: str | None) -> float:
    """Bytes one DiT tensor takes once loaded: quantized block layers at their mode's size,
    official fp8 layers kept in fp8, other floats in `dtype`, the rest as stored."""
    if quantization is not None and _quantizable_weight(name):
        return count * QUANTIZED_BYTES_PER_WEIGHT[quantization]
    if stored == "F8_E4M3":
        return count  # an official fp8 layer stays fp8 (its scale is a separate scalar)
    return count * (dtype.size if _is_float(stored) else _STORED_SIZES.get(stored, 4))


def dit_weight_bytes(checkpoint: Checkpoint, dtype: mx.Dtype, quantization: str | None) -> tuple[int, list[int]]:
    """(bytes outside the blocks, bytes of each block) of the DiT as it will be resident. A file
    already quantized by `ltx2-mlx quantize` is held as stored (its floats in `dtype`)."""
    stored_quantized = "quantization" in checkpoint.metadata
    other, blocks = 0.0, {}
    for name, entry in checkpoint.entries.items():
        if not name.startswith(DIT_PREFIX) or "embeddings_connector." in name:
            continue  # the text connectors belong to the prompt processor
        count = math.prod(entry.shape)
        if stored_quantized:
            size = count * dtype.size if _is_float(entry.dtype) else entry.nbytes
        else:
            size = _resident_bytes(name, entry.dtype, count, dtype, quantization)
        index = _block_index(name)
        if index is not None:
            blocks[index] = blocks.get(index, 0.0) + size
        else:
            other += size
    return int(other), [int(blocks[i]) for i in sorted(blocks)]


def section_weight_bytes(checkpoint: Checkpoint, prefixes: tuple[str, ...], dtype: mx.Dtype) -> int:
    """Float tensors under `prefixes` held in `dtype`, other tensors as stored."""
    return sum(
        math.prod(entry.shape) * dtype.size if _is_float(entry.dtype) else entry.nbytes
        for name, entry in checkpoint.entries.items()
        if name.startswith(prefixes)
    )


def _gemma_tensors(gemma_dir: Path):
    """(element count, quantizable matrix?, layer index or None) of each language-model tensor."""
    for shard in sorted(gemma_dir.glob("*.safetensors")):
        for name, entry in Checkpoint.open(shard).entries.items():
            if "vision_tower." in name or "multi_modal_projector." in name:
                continue
            layer = re.search(r"\.layers\.(\d+)\.", name)
            matrix = len(entry.shape) == 2 and entry.shape[-1] % 64 == 0
            yield math.prod(entry.shape), matrix, layer.group(1) if layer else None


def _gemma_size(count: int, matrix: bool, dtype: mx.Dtype, bits: int | None) -> float:
    """Quantized layers (the Linears and the embedding) at `bits` plus a scale and bias per group of 64."""
    return count * (bits / 8 + 4 / 64) if bits and matrix else count * dtype.size


def gemma_weight_bytes(
    gemma_dir: str | Path, dtype: mx.Dtype, bits: int | None, streamed: bool = False
) -> tuple[int, dict]:
    """(resident bytes of Gemma's language model, config.json's text section). Streamed
    (`--low-memory`), only the weights outside the layers and two layers are resident."""
    gemma_dir = Path(gemma_dir)
    raw = json.loads((gemma_dir / "config.json").read_text())
    outside, layers = 0.0, {}
    for count, matrix, layer in _gemma_tensors(gemma_dir):
        size = _gemma_size(count, matrix, dtype, bits)
        if layer is not None:
            layers[layer] = layers.get(layer, 0.0) + size
        else:
            outside += size
    held = sorted(layers.values())[-STREAMED_BLOCKS:] if streamed else layers.values()
    return int(outside + sum(held)), raw.get("text_config", raw)


def gemma_load_peak(gemma_dir: str | Path, dtype: mx.Dtype, bits: int | None) -> int:
    """The peak of loading Gemma quantized: the weights outside the layers at `bits`, with the
    largest of them (the 262k-token embedding) also held in `dtype` while it is quantized
    (measured on an H200: 2.87 GiB at 8 bits, 2.40 GiB at 4, as this gives). 0 unquantized."""
    if not bits:
        return 0
    outside = [(count, matrix) for count, matrix, layer in _gemma_tensors(Path(gemma_dir)) if layer is None]
    largest = max((count for count, matrix in outside if matrix), default=0)
    return int(sum(_gemma_size(count, matrix, dtype, bits) for count, matrix in outside) + largest * dtype.size)


# --------------------------------------------------------------------------------------------
# Shapes
# --------------------------------------------------------------------------------------------


def latent_shape(height: int, width: int, num_frames: int) -> tuple[int, int, int]:
    """(frames, height, width) of the video latent: 8x in time after the first frame, 32x in space."""
    return (num_frames - 1) // 8 + 1, height // 32, width // 32


def audio_tokens(num_frames: int, frame_rate: float) -> int:
    """25 audio latents per second of video."""
    return round(num_frames / frame_rate * 25)


def _find(config, key: str, default):
    """The first value of `key` anywhere in a nested config (sections differ across versions)."""
    if isinstance(config, dict):
        if key in config:
            return config[key]
        for value in config.values():
            found = _find(value, key, None)
            if found is not None:
                return found
    return default


# --------------------------------------------------------------------------------------------
# Phases
# --------------------------------------------------------------------------------------------


def text_phases(inputs: PlanInputs, checkpoint: Checkpoint, low_memory: bool = False) -> list[PhaseEstimate]:
    """Gemma encoding the prompts (all its hidden states kept), then the feature extractor and
    connectors turning them into contexts, after Gemma is freed."""
    from LTX_2_MLX.loader.text_encoder import streams_gemma

    if inputs.gemma_path is None:
        return []
    act = inputs.dtype.size
    streamed = streams_gemma(low_memory, inputs.enhance_prompt)
    weights, text = gemma_weight_bytes(inputs.gemma_path, inputs.dtype, inputs.text_encoder_bits, streamed)
    hidden, layers = int(text.get("hidden_size", 3840)), int(text.get("num_hidden_layers", 48))
    intermediate = int(text.get("intermediate_size", 4 * hidden))
    tokens = inputs.context_tokens
    prompts = 2 if inputs.pipeline.guided else 1
    states = prompts * (layers + 1) * tokens * hidden * act
    bits = f", int{inputs.text_encoder_bits}" if inputs.text_encoder_bits else ""
    scores = attention_scores_bytes(int(text.get("num_attention_heads", 16)), tokens, tokens)
    running = int(states + _K_GEMMA_LAYER * tokens * intermediate * act + scores)
    loading = gemma_load_peak(inputs.gemma_path, inputs.dtype, inputs.text_encoder_bits) - weights
    gemma = PhaseEstimate(
        "Gemma encode", weights, max(running, loading),
        f"{layers} layers{bits}{' streamed' if streamed else ''}, {prompts} x {tokens} tokens",
    )  # fmt: skip
    prefixes = ("text_embedding_projection.", DIT_PREFIX + "video_embeddings_connector.",
                DIT_PREFIX + "audio_embeddings_connector.", DIT_PREFIX + "embeddings_connector.")  # fmt: skip
    transformer = checkpoint.config().get("transformer", {})
    connector_heads = int(transformer.get("connector_num_attention_heads", 30))
    connector_width = connector_heads * int(transformer.get("connector_attention_head_dim", 128))
    # The hidden states of every prompt are held until each is consumed; the feature extractor
    # then normalises and projects one chunk of tokens at a time, and the connectors run after it.
    chunk = min(tokens, TOKENS_PER_CHUNK)
    extractor = _K_PROCESSOR * chunk * (layers + 1) * hidden * 4
    connectors = _K_CONNECTOR * tokens * connector_width * act + attention_scores_bytes(connector_heads, tokens, tokens)
    processor = PhaseEstimate(
        "prompt processor", section_weight_bytes(checkpoint, prefixes, inputs.dtype),
        int(states + max(extractor, connectors)), f"feature extractor ({chunk} tokens at a time) + connectors",
    )  # fmt: skip
    return [gemma, processor]


def attention_scores_bytes(heads: int, queries: int, keys: int, device: mx.Device | None = None) -> int:
    """The scores an attention holds at once: none where MLX's attention is fused (a GPU), a
    float32 queries x keys matrix per head (and its softmax) where it is not (the CPU)."""
    device = device or mx.default_device()
    if device.type != mx.DeviceType.cpu:
        return 0
    return int(_K_SCORES * heads * queries * keys * 4)


def dit_activation_bytes(
    config: dict, video_tokens: int, audio: int, dtype: mx.Dtype, context_tokens: int = 1024
) -> int:
    """A DiT forward's activations: one block's worth (blocks run one after the other), plus
    the largest attention's scores where they are materialised."""
    video_heads, audio_heads = config["num_attention_heads"], config.get("audio_num_attention_heads", 0)
    video_width = video_heads * config["attention_head_dim"]
    audio_width = audio_heads * config.get("audio_attention_head_dim", 0)
    streams = _K_DIT * (video_tokens * video_width + audio * audio_width) * dtype.size
    scores = max(
        attention_scores_bytes(video_heads, video_tokens, max(video_tokens, context_tokens)),
        attention_scores_bytes(audio_heads, max(audio, video_tokens), max(audio, context_tokens, video_tokens)),
    )
    return int(streams + scores)


def dit_phase(
    inputs: PlanInputs, checkpoint: Checkpoint, name: str, height: int, width: int, low_memory: bool,
    guided: bool = False, loads: bool = True,
) -> PhaseEstimate:  # fmt: skip
    """A denoising stage (`loads`: the one that loads the DiT). Streamed, a guided step's passes
    (up to GUIDED_PASSES) go through the blocks together, so their activations are live at
    once; resident, one after the other."""
    config = checkpoint.config("transformer", what="LTX-2 transformer")["transformer"]
    other, blocks = dit_weight_bytes(checkpoint, inputs.dtype, inputs.quantization)
    f, h, w = latent_shape(height, width, inputs.num_frames)
    video_tokens = (f + inputs.keyframes) * h * w
    audio = audio_tokens(inputs.num_frames, inputs.frame_rate) if inputs.generate_audio else 0
    # Quantizing as it reads, one block is also held as read (and dequantized, from fp8 to
    # int8/int4) beside its quantized copy: streamed, the prefetched block at every step.
    converting = block_conversion_bytes(checkpoint, inputs.dtype, inputs.quantization)
    if low_memory:
        largest = sorted(blocks)[-STREAMED_BLOCKS:]
        resident = int(other + largest[-1] + _READ_AHEAD * sum(largest[:-1]) + converting)
    else:
        resident = other + sum(blocks) + (converting if loads else 0)
    held = f"{min(STREAMED_BLOCKS, len(blocks))} of {len(blocks)} blocks" if low_memory else f"{len(blocks)} blocks"
    passes = GUIDED_PASSES if guided and low_memory else 1
    activations = passes * dit_activation_bytes(config, video_tokens, audio, inputs.dtype, inputs.context_tokens)
    detail = f"{held}, {video_tokens}+{audio} tokens" + (f" x {passes} passes" if passes > 1 else "")
    return PhaseEstimate(name, resident, activations,
                         detail + (f", {inputs.quantization}" if inputs.quantization else ""))  # fmt: skip


def block_conversion_bytes(checkpoint: Checkpoint, dtype: mx.Dtype, quantization: str | None) -> int:
    """What converting the largest block to `quantization` holds beyond its quantized copy: its
    quantizable layers as read (and dequantized to `dtype` where an fp8 layer becomes
    int8/int4). 0 without conversion (no --quantization, or a file already quantized)."""
    if quantization is None or "quantization" in checkpoint.metadata:
        return 0
    blocks: dict[int, float] = {}
    for name, entry in checkpoint.entries.items():
        index = _block_index(name)
        if index is None or not _quantizable_weight(name):
            continue
        count = math.prod(entry.shape)
        if entry.dtype == "F8_E4M3":
            size = 0 if quantization == "fp8" else count + count * dtype.size  # kept, or read and dequantized
        else:
            size = count * dtype.size
        blocks[index] = blocks.get(index, 0.0) + size
    return int(max(blocks.values(), default=0))


def upscaler_phase(inputs: PlanInputs, height: int, width: int, dit_resident: int) -> PhaseEstimate:
    """The latent x2 upscale, run while the DiT stays resident for stage 2."""
    upscaler = Checkpoint.open(inputs.spatial_upscaler_path)
    mid = int(upscaler.config().get("mid_channels", 512))
    f, h, w = latent_shape(height, width, inputs.num_frames)
    weights = section_weight_bytes(upscaler, ("",), inputs.dtype) + dit_resident
    activations = int(_K_UPSCALER * mid * f * h * w * inputs.dtype.size)
    return PhaseEstimate("upscaler", weights, activations, "latent x2, beside the DiT")


def vae_decode_phase(inputs: PlanInputs, checkpoint: Checkpoint, tile_size: tuple[int, int] | None) -> PhaseEstimate:
    vae = checkpoint.config("vae", what="video VAE")["vae"]
    base, patch = int(vae.get("decoder_base_channels", 128)), int(vae.get("patch_size", 4))
    frames, height, width = inputs.num_frames, inputs.height, inputs.width
    if tile_size is not None:
        pixels, tile_frames = tile_size
        frames, height, width = min(frames, tile_frames + 1), min(height, pixels), min(width, pixels)
    voxels = frames * (height // patch) * (width // patch)
    # Tiles are blended into float32 frames of one temporal chunk (weights and sums).
    chunk = min(inputs.num_frames, tile_size[1] + 1) if tile_size else inputs.num_frames
    blend = 3 * chunk * inputs.height * inputs.width * 4 * (2 if tile_size else 1)
    weights = section_weight_bytes(checkpoint, ("vae.decoder.", "vae.per_channel_statistics."), inputs.dtype)
    detail = f"tiles {tile_size[0]} px x {tile_size[1]} frames" if tile_size else "whole video at once"
    copies = int(_VAE_WEIGHT_COPIES[tile_size is not None] * weights)
    return PhaseEstimate("VAE decode", weights, int(_K_VAE * base * voxels * inputs.dtype.size + blend + copies),
                         detail)  # fmt: skip


def audio_decode_phase(inputs: PlanInputs, checkpoint: Checkpoint) -> PhaseEstimate:
    config = checkpoint.config()
    vocoder, audio_vae = config.get("vocoder", {}), config.get("audio_vae", {})
    initial = int(_find(vocoder, "upsample_initial_channel", 1024))
    rates = list(_find(vocoder, "upsample_rates", [6, 5, 2, 2, 2]))
    mel_frames = inputs.num_frames / inputs.frame_rate * int(_find(audio_vae, "sampling_rate", 16000))
    mel_frames /= int(_find(audio_vae, "hop_length", 160))
    widest = max(initial / 2 ** (i + 1) * math.prod(rates[: i + 1]) for i in range(len(rates)))
    channels = 2 if _find(vocoder, "stereo", True) else 1
    prefixes = ("audio_vae.decoder.", "audio_vae.per_channel_statistics.", "vocoder.")
    activations = int(_K_VOCODER * channels * widest * mel_frames * 4)
    return PhaseEstimate("audio decode", section_weight_bytes(checkpoint, prefixes, inputs.dtype), activations,
                         "audio VAE decoder + vocoder")  # fmt: skip


def estimate_phases(
    inputs: PlanInputs, low_memory: bool, tile_size: tuple[int, int] | None, gemma_low_memory: bool | None = None
) -> list[PhaseEstimate]:
    """Every phase of the pipeline, in the order it runs; Gemma as `low_memory` says unless
    `gemma_low_memory` is given."""
    checkpoint = Checkpoint.open(inputs.checkpoint)
    phases = text_phases(inputs, checkpoint, low_memory if gemma_low_memory is None else gemma_low_memory)
    if inputs.pipeline.two_stage:
        half_height, half_width = inputs.height // 2, inputs.width // 2
        phases.append(dit_phase(inputs, checkpoint, "DiT stage 1", half_height, half_width, low_memory,
                                inputs.pipeline.guided))  # fmt: skip
        if inputs.spatial_upscaler_path is not None:
            # Between forwards a streamed DiT holds only what is outside its blocks.
            beside = dit_weight_bytes(checkpoint, inputs.dtype, inputs.quantization)[0] if low_memory else None
            phases.append(upscaler_phase(inputs, inputs.height, inputs.width, beside or phases[-1].weights))
        phases.append(dit_phase(inputs, checkpoint, "DiT stage 2", inputs.height, inputs.width, low_memory,
                                loads=False))  # fmt: skip
    else:
        phases.append(dit_phase(inputs, checkpoint, "DiT", inputs.height, inputs.width, low_memory,
                                inputs.pipeline.guided))  # fmt: skip
    config = checkpoint.config()
    if inputs.generate_audio and "audio_vae" in config and "vocoder" in config:
        phases.append(audio_decode_phase(inputs, checkpoint))
    phases.append(vae_decode_phase(inputs, checkpoint, tile_size))
    # From the first staged read on (Gemma's streamed layers, else the DiT), the read buffers
    # are held (CUDA; loader.staging): counted in every phase.
    return [replace(phase, buffers=staged_read_bytes()) for phase in phases]


def plan_generation(
    inputs: PlanInputs, budget: int, low_memory: bool | None = None, tiled_decode: bool = True
) -> MemoryPlan:
    """The least constrained plan that fits `budget`: the DiT resident unless only streaming
    fits (`low_memory=None`; True or False forces it), decode tiles as large as fit (with
    `tiled_decode`). When nothing fits, the plan names what would (`MemoryPlan.alternatives`).

    Chosen here (`low_memory=None`), streaming the DiT leaves Gemma whole while it enhances the
    prompt where that fits: each model is freed before the next loads, and streamed, Gemma is
    read again for every token it writes."""
    if low_memory is not None:
        residencies = [(low_memory, None)]
    else:
        residencies = [(False, None), *([(True, False)] if inputs.enhance_prompt else []), (True, None)]
    plan = None
    for streamed, gemma_streamed in residencies:
        plans = [MemoryPlan(tuple(estimate_phases(inputs, streamed, tile_size, gemma_streamed)), budget, streamed,
                            tile_size, gemma_low_memory=gemma_streamed)
                 for tile_size in (TILE_SIZES if tiled_decode else (None,))]  # fmt: skip
        fitting = [plan for plan in plans if plan.fits]
        if fitting and streamed:
            # Streaming is chosen to save memory: tiles no larger than keep the decode below
            # the rest of the run's peak.
            return next((plan for plan in fitting if plan.peak.name != "VAE decode"), fitting[-1])
        if fitting:
            return fitting[0]
        plan = plans[-1]
    return replace(plan, alternatives=tuple(_alternatives(inputs, budget, low_memory, tiled_decode)))


def _alternatives(inputs: PlanInputs, budget: int, low_memory: bool | None, tiled_decode: bool) -> list[str]:
    """Options that would make the generation fit, from the least change to the most."""

    def fits(changed: PlanInputs, streamed: bool = True, tiled: bool = True) -> bool:
        phases = estimate_phases(changed, streamed, TILE_SIZES[-1] if tiled else None)
        return max(phase.peak for phase in phases) <= budget

    found = []
    streamed = " --low-memory" if low_memory is not None else ""
    if low_memory is False and fits(inputs, tiled=tiled_decode):
        found.append("--low-memory")
    if not tiled_decode and fits(inputs, low_memory is not False):
        found.append("--tiled-decode")
    if inputs.gemma_path is not None:
        for bits in (8, 4):
            if (inputs.text_encoder_bits or 16) > bits and fits(replace(inputs, text_encoder_bits=bits)):
                found.append(f"--text-encoder-bits {bits}" + streamed)
                break
    if "quantization" not in Checkpoint.open(inputs.checkpoint).metadata:
        current = QUANTIZATION_ORDER.index(inputs.quantization) if inputs.quantization else -1
        for mode in QUANTIZATION_ORDER[current + 1 :]:
            bits = inputs.text_encoder_bits or (4 if inputs.gemma_path is not None else None)
            if fits(replace(inputs, quantization=mode, text_encoder_bits=bits)):
                found.append(f"--quantization {mode}" + (f" --text-encoder-bits {bits}" if bits else "") + streamed)
                break
    multiple = inputs.pipeline.size_multiple
    height, width = inputs.height, inputs.width
    smallest = replace(inputs, quantization=inputs.quantization or "int4",
                       text_encoder_bits=inputs.text_encoder_bits or 4)  # fmt: skip
    while (height, width) != (multiple, multiple):
        height = max(multiple, height // 2 // multiple * multiple)
        width = max(multiple, width // 2 // multiple * multiple)
        if fits(replace(smallest, height=height, width=width)):
            extra = "" if inputs.quantization else " --quantization int4"
            extra += "" if inputs.text_encoder_bits or inputs.gemma_path is None else " --text-encoder-bits 4"
            found.append(f"--height {height} --width {width}{extra}{streamed}")
            break
    return found
