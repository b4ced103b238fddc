"""Full-size LTX-2 model files with random weights, for benchmarks: written tensor by tensor.

    python benchmarks/random_weights.py DIR                      # bf16, ~64 GB: the 19B DiT + Gemma 3 12B
    python benchmarks/random_weights.py DIR --storage fp8        # the DiT in the official fp8 layout, ~45 GB
    python benchmarks/random_weights.py DIR --scale-down 8       # the same files, narrower and shallower (CPU check)
    python benchmarks/random_weights.py DIR --checkpoint-only    # only the checkpoint (e.g. a bf16 DiT, 38 GB)

Writes, in DIR:
  ltx-2-random.safetensors   the official single-file checkpoint: DiT (`model.diffusion_model.`),
                             video VAE (`vae.`), audio VAE (`audio_vae.`), vocoder (`vocoder.`),
                             text projection (`text_embedding_projection.`) and the two text
                             connectors, with the config JSON under the metadata key `config`;
                             `--storage fp8` stores the block Linears of blocks 1..N-6 as F8_E4M3
                             with float32 `weight_scale`/`input_scale` and `_quantization_metadata`,
                             as Lightricks' ltx-2-19b-*-fp8 files do;
  upscaler-x2.safetensors    the spatial x2 latent upscaler, its config in the metadata;
  distilled-lora.safetensors a LoRA on every block Linear (rank `--lora-rank`), for two-stage;
  gemma/                     Gemma 3 12B as Hugging Face ships it: config.json (ltx-core's own
                             GEMMA3_CONFIG_FOR_LTX), model-0000i-of-0000N.safetensors shards with
                             model.safetensors.index.json (language model, vision tower, projector),
                             a small sentencepiece tokenizer trained here (its vocabulary is smaller
                             than the embedding's 262,208 rows) and preprocessor_config.json.

Names and shapes come from ltx-core's and transformers' own modules built on the meta device
(nothing allocated); values are normal x 0.02 (per-channel `std-of-means` 1.0), cycled from a
small random pool at a random offset per tensor, so writing runs at disk speed and no tensor is
ever whole in memory. Configs: /work/shared/REFERENCE_CONFIGS.md (benchmarks/configs/).
"""

import argparse
import json
import math
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CONFIGS = Path(__file__).resolve().parent / "configs"
TESTS = Path(__file__).resolve().parents[1] / "tests"
CHECKPOINT_NAME = "ltx-2-random.safetensors"
UPSCALER_NAME = "upscaler-x2.safetensors"
LORA_NAME = "distilled-lora.safetensors"
GEMMA_NAME = "gemma"
MANIFEST_NAME = "random-weights.json"
STD = 0.02
FP8_SPREAD = 64.0  # fp8 codes hold normal x FP8_SPREAD; weight_scale = STD / FP8_SPREAD
POOL_ELEMENTS = (1 << 24) + 7  # not a power of two, so a tensor's rows do not repeat in step
SHARD_BYTES = 5 * 10**9
_ITEM_SIZE = {"BF16": 2, "F32": 4, "F8_E4M3": 1}
_FP8_LAYER_SUFFIXES = (".to_q", ".to_k", ".to_v", ".to_out.0", "ff.net.0.proj", "ff.net.2")


@dataclass(frozen=True)
class TensorSpec:
    """One tensor of a file: stored dtype and what it holds (`fill`: None = random, else a constant)."""

    name: str
    shape: tuple[int, ...]
    dtype: str = "BF16"
    fill: float | None = None

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * _ITEM_SIZE[self.dtype]


class RandomPool:
    """Random bytes per stored dtype, cycled: a tensor is the pool from a random offset on."""

    def __init__(self, seed: int = 0):
        values = np.random.default_rng(seed).standard_normal(POOL_ELEMENTS, dtype=np.float32)
        self.pools = {
            "BF16": _bf16_bits(values * STD).view(np.uint8),
            "F32": (values * STD).view(np.uint8),
            "F8_E4M3": _fp8_codes(values * FP8_SPREAD),
        }

    def write(self, file, spec: TensorSpec, rng: np.random.Generator) -> None:
        if spec.fill is not None:
            one = _bf16_bits(np.full(1, spec.fill, np.float32)) if spec.dtype == "BF16" else None
            value = one if one is not None else np.full(1, spec.fill, np.float32)
            file.write(np.tile(value, math.prod(spec.shape)).tobytes())
            return
        pool, remaining = self.pools[spec.dtype], spec.nbytes
        step = _ITEM_SIZE[spec.dtype]
        start = int(rng.integers(0, len(pool) // step)) * step
        while remaining:
            piece = pool[start : start + remaining]
            file.write(memoryview(piece))
            remaining -= len(piece)
            start = 0


def _bf16_bits(values: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns (round to nearest even), as uint16."""
    bits = values.astype(np.float32).view(np.uint32)
    rounded = bits + 0x7FFF + ((bits >> 16) & 1)
    return (rounded >> 16).astype(np.uint16)


def _fp8_codes(values: np.ndarray) -> np.ndarray:
    """float32 -> float8_e4m3fn codes (MLX's own conversion), as uint8."""
    import mlx.core as mx

    with mx.stream(mx.cpu):
        return np.array(mx.to_fp8(mx.clip(mx.array(values), -448.0, 448.0)))


def safetensors_header(specs: list[TensorSpec], metadata: dict) -> tuple[bytes, int]:
    """(the file's first bytes: header length and JSON header, offsets known from the shapes;
    the bytes of data that follow)."""
    header, offset = {}, 0
    for spec in specs:
        header[spec.name] = {
            "dtype": spec.dtype,
            "shape": list(spec.shape),
            "data_offsets": [offset, offset + spec.nbytes],
        }
        offset += spec.nbytes
    if metadata:
        header["__metadata__"] = metadata
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    return len(encoded).to_bytes(8, "little") + encoded, offset


def write_safetensors(path: Path, specs: list[TensorSpec], metadata: dict, pool: RandomPool, seed: int) -> None:
    """A safetensors file from specs: the header, then each tensor's bytes streamed from the pool."""
    header, _ = safetensors_header(specs, metadata)
    rng = np.random.default_rng(seed)
    with open(path, "wb") as file:
        file.write(header)
        for spec in specs:
            pool.write(file, spec, rng)


# --------------------------------------------------------------------------------------------
# Configurations
# --------------------------------------------------------------------------------------------


def model_configs(scale_down: int = 1) -> dict:
    """The checkpoint's config sections, the upscaler's and Gemma's config.json; `scale_down`
    (a power of two up to 16) divides every width and depth, keeping the layout."""
    from ltx_core.text_encoders.gemma.config import GEMMA3_CONFIG_FOR_LTX

    if scale_down not in (1, 2, 4, 8, 16):
        raise ValueError(f"--scale-down {scale_down}: use 1, 2, 4, 8 or 16")
    d = scale_down
    transformer = json.loads((CONFIGS / "ltx2_19b.json").read_text())["transformer"]
    vae = json.loads((CONFIGS / "ltx2_vae.json").read_text())
    vae = vae.get("vae", vae)
    gemma = GEMMA3_CONFIG_FOR_LTX.to_dict()
    text, vision = gemma["text_config"], gemma["vision_config"]
    gemma.update(architectures=["Gemma3ForConditionalGeneration"], torch_dtype="bfloat16")
    if d > 1:
        text.update(
            hidden_size=3840 // d,
            intermediate_size=15360 // d,
            num_hidden_layers=max(2, 48 // d),
            num_attention_heads=max(1, 16 // d),
            num_key_value_heads=max(1, 8 // d),
            head_dim=256 // d,
        )
        if "layer_types" in text:
            text["layer_types"] = text["layer_types"][: text["num_hidden_layers"]]
        vision.update(hidden_size=1152 // d, intermediate_size=4304 // d, num_hidden_layers=max(1, 27 // d),
                      num_attention_heads=max(1, 16 // d))  # fmt: skip
        transformer.update(num_layers=max(2, 48 // d), num_attention_heads=32 // d, audio_num_attention_heads=32 // d,
                           cross_attention_dim=4096 // d, audio_cross_attention_dim=2048 // d)  # fmt: skip
        vae["decoder_base_channels"] = 128 // d
    hidden = text["hidden_size"]
    # LTX-2.0's text connectors work at Gemma's width: 30 heads x 128 at full size.
    transformer.update(caption_channels=hidden, connector_num_attention_heads=30,
                       connector_attention_head_dim=hidden // 30, connector_num_layers=2)  # fmt: skip
    audio_vae = {
        "model": {"params": {
            # ch is also the statistics length: 8 latent channels x 16 mel bins, at any scale.
            "ddconfig": {"ch": 128, "out_ch": 2, "ch_mult": [1, 2, 4], "num_res_blocks": 2, "attn_resolutions": [],
                         "resolution": 256, "z_channels": 8, "double_z": True, "in_channels": 2, "mel_bins": 64,
                         "norm_type": "pixel", "causality_axis": "height", "mid_block_add_attention": False,
                         "dropout": 0.0},
            "sampling_rate": 16000}},
        "preprocessing": {"stft": {"filter_length": 1024, "hop_length": 160, "causal": True},
                          "mel": {"n_mel_channels": 64}},
    }  # fmt: skip
    vocoder = {"resblock": "1", "stereo": True, "upsample_initial_channel": 1024 // d,
               "upsample_rates": [6, 5, 2, 2, 2], "upsample_kernel_sizes": [16, 15, 8, 4, 4],
               "resblock_kernel_sizes": [3, 7, 11], "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
               "output_sampling_rate": 24000}  # fmt: skip
    upscaler = {"_class_name": "LatentUpsampler", "in_channels": 128, "mid_channels": 512 // d,
                "num_blocks_per_stage": 4, "dims": 3, "spatial_upsample": True, "temporal_upsample": False}  # fmt: skip
    checkpoint = {"transformer": transformer, "vae": vae, "audio_vae": audio_vae, "vocoder": vocoder}
    return {"checkpoint": checkpoint, "upscaler": upscaler, "gemma": gemma}


# --------------------------------------------------------------------------------------------
# Names and shapes, from the reference's modules on the meta device
# --------------------------------------------------------------------------------------------


def import_reference() -> None:
    """ltx-core's audio VAE imports torchaudio; without it, the tests' placeholder stands in."""
    import importlib.util

    if importlib.util.find_spec("torchaudio") is None:
        sys.path.insert(0, str(TESTS))
        import conftest  # noqa: F401


def _meta_shapes(build, config) -> dict[str, tuple[tuple[int, ...], bool]]:
    """{state-dict key: (shape, is floating point)} of the module `build(config)` makes."""
    import torch

    with torch.device("meta"):
        module = build(config)
    return {key: (tuple(value.shape), value.is_floating_point()) for key, value in module.state_dict().items()}


def _spec(name: str, shape: tuple[int, ...], floating: bool = True) -> TensorSpec:
    if not floating:
        raise ValueError(f"{name}: a non-float tensor in the reference's state dict; the writer stores floats only")
    return TensorSpec(name, shape, fill=1.0 if name.endswith("std-of-means") else None)


def _fp8_blocks(num_layers: int) -> range:
    """Blocks the official fp8 files store in fp8: 1-42 of 48 (the first and the last five stay bf16)."""
    return range(1, max(2, num_layers - 5))


def checkpoint_specs(config: dict, storage: str) -> tuple[list[TensorSpec], dict]:
    """(tensors, metadata) of the official single-file checkpoint."""
    import_reference()
    from ltx_core.model.audio_vae import AudioDecoderConfigurator, AudioEncoderConfigurator, VocoderConfigurator
    from ltx_core.model.transformer import LTXModelConfigurator
    from ltx_core.model.video_vae import VideoDecoderConfigurator, VideoEncoderConfigurator
    from ltx_core.text_encoders.gemma.embeddings_connector import (
        AudioEmbeddings1DConnectorConfigurator,
        Embeddings1DConnectorConfigurator,
    )

    specs: list[TensorSpec] = []
    fp8_layers = []
    blocks = _fp8_blocks(config["transformer"]["num_layers"])
    for key, (shape, floating) in _meta_shapes(LTXModelConfigurator.from_config, config).items():
        name = "model.diffusion_model." + key
        parts = key.split(".")
        layer = key.rsplit(".", 1)[0]
        if (storage == "fp8" and parts[0] == "transformer_blocks" and int(parts[1]) in blocks
                and layer.endswith(_FP8_LAYER_SUFFIXES) and key.endswith(".weight")):  # fmt: skip
            fp8_layers.append("model.diffusion_model." + layer)
            specs.append(TensorSpec(name, shape, "F8_E4M3"))
            specs.append(TensorSpec(name + "_scale", (), "F32", fill=STD / FP8_SPREAD))
            specs.append(TensorSpec(name.removesuffix("weight") + "input_scale", (), "F32", fill=0.01))
        else:
            specs.append(_spec(name, shape, floating))
    connectors = (("video_embeddings_connector.", Embeddings1DConnectorConfigurator),
                  ("audio_embeddings_connector.", AudioEmbeddings1DConnectorConfigurator))  # fmt: skip
    for prefix, configurator in connectors:
        for key, (shape, floating) in _meta_shapes(configurator.from_config, config).items():
            specs.append(_spec("model.diffusion_model." + prefix + key, shape, floating))
    # LTX-2.0's feature extractor: every Gemma hidden state (the layers' and the embedding's), concatenated.
    hidden = config["transformer"]["caption_channels"]
    layers = config["_gemma_layers"]
    specs.append(TensorSpec("text_embedding_projection.aggregate_embed.weight", (hidden, hidden * (layers + 1))))
    parts = (
        ("vae.", "decoder.", VideoDecoderConfigurator),
        ("vae.", "encoder.", VideoEncoderConfigurator),
        ("audio_vae.", "decoder.", AudioDecoderConfigurator),
        ("audio_vae.", "encoder.", AudioEncoderConfigurator),
    )
    statistics = set()
    for section, part, configurator in parts:
        for key, (shape, floating) in _meta_shapes(configurator.from_config, config).items():
            if key.startswith("per_channel_statistics."):
                if section + key not in statistics:
                    statistics.add(section + key)
                    specs.append(_spec(section + key, shape, floating))
            else:
                specs.append(_spec(section + part + key, shape, floating))
    for key, (shape, floating) in _meta_shapes(VocoderConfigurator.from_config, config).items():
        specs.append(_spec("vocoder." + key, shape, floating))
    saved = {key: value for key, value in config.items() if not key.startswith("_")}
    metadata = {"config": json.dumps(saved)}
    if fp8_layers:
        layers_metadata = {layer: {"format": "float8_e4m3fn"} for layer in fp8_layers}
        metadata["_quantization_metadata"] = json.dumps({"format_version": "1.0", "layers": layers_metadata})
    return specs, metadata


def model_checkpoint_specs(configs: dict, storage: str) -> tuple[list[TensorSpec], dict]:
    """The single-file checkpoint of `model_configs()`, its text projection sized to Gemma's layers."""
    gemma_layers = configs["gemma"]["text_config"]["num_hidden_layers"]
    return checkpoint_specs({**configs["checkpoint"], "_gemma_layers": gemma_layers}, storage)


def upscaler_specs(config: dict) -> list[TensorSpec]:
    import_reference()
    from ltx_core.model.upsampler import LatentUpsamplerConfigurator

    return [_spec(key, shape, floating) for key, (shape, floating) in
            _meta_shapes(LatentUpsamplerConfigurator.from_config, config).items()]  # fmt: skip


def lora_specs(transformer: dict, rank: int) -> list[TensorSpec]:
    """A LoRA (`diffusion_model.<layer>.lora_A/B.weight`) on every Linear of the blocks that fp8 casts."""
    import_reference()
    from ltx_core.model.transformer import LTXModelConfigurator

    specs = []
    for key, (shape, _) in _meta_shapes(LTXModelConfigurator.from_config, {"transformer": transformer}).items():
        layer = key.rsplit(".", 1)[0]
        if key.startswith("transformer_blocks.") and key.endswith(".weight") and layer.endswith(_FP8_LAYER_SUFFIXES):
            out_features, in_features = shape
            specs.append(TensorSpec(f"diffusion_model.{layer}.lora_A.weight", (rank, in_features)))
            specs.append(TensorSpec(f"diffusion_model.{layer}.lora_B.weight", (out_features, rank)))
    return specs


def gemma_specs(gemma_config: dict) -> list[TensorSpec]:
    """Gemma 3's tensors under the names of Google's files (language_model.model., vision_tower.,
    multi_modal_projector.); the tied lm_head is not stored."""
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration

    def build(config):
        return Gemma3ForConditionalGeneration(Gemma3Config.from_dict(config))

    renames = (("model.language_model.", "language_model.model."), ("model.vision_tower.", "vision_tower."),
               ("model.multi_modal_projector.", "multi_modal_projector."))  # fmt: skip
    specs = []
    for key, (shape, floating) in _meta_shapes(build, gemma_config).items():
        if key.startswith("lm_head."):
            continue
        new = next((new + key[len(old) :] for old, new in renames if key.startswith(old)), None)
        if new is None:
            raise ValueError(f"Gemma tensor {key} is under no known prefix")
        specs.append(_spec(new, shape, floating))
    return specs


def _shards(specs: list[TensorSpec]) -> list[list[TensorSpec]]:
    shards, size = [[]], 0
    for spec in specs:
        if size and size + spec.nbytes > SHARD_BYTES:
            shards.append([])
            size = 0
        shards[-1].append(spec)
        size += spec.nbytes
    return shards


def _gemma_tokenizer(folder: Path) -> None:
    """The tests' small sentencepiece tokenizer (tokenizer.model + tokenizer.json) and the image processor."""
    sys.path.insert(0, str(TESTS))
    from test_text_encoder import _image_processor, _train_tokenizer

    _train_tokenizer(folder)
    _image_processor().save_pretrained(str(folder))


# --------------------------------------------------------------------------------------------
# The files
# --------------------------------------------------------------------------------------------


def write_model_files(folder: str | Path, storage: str = "bf16", scale_down: int = 1, lora_rank: int = 32,
                      seed: int = 0, log=print) -> dict:  # fmt: skip
    """Write every file (skipping a folder already written with the same settings); returns their paths."""
    folder = Path(folder)
    settings = {"storage": storage, "scale_down": scale_down, "lora_rank": lora_rank, "seed": seed}
    paths = {
        "checkpoint_path": str(folder / CHECKPOINT_NAME),
        "gemma_path": str(folder / GEMMA_NAME),
        "spatial_upscaler_path": str(folder / UPSCALER_NAME),
        "distilled_lora": str(folder / LORA_NAME),
    }
    manifest = folder / MANIFEST_NAME
    if manifest.exists() and json.loads(manifest.read_text()).get("settings") == settings:
        log(f"random weights already in {folder} ({settings})")
        return paths
    if storage not in ("bf16", "fp8"):
        raise ValueError(f"storage {storage!r}: use bf16 or fp8")
    started = time.perf_counter()
    configs = model_configs(scale_down)
    checkpoint, metadata = model_checkpoint_specs(configs, storage)
    gemma = gemma_specs(configs["gemma"])
    upscaler = upscaler_specs(configs["upscaler"])
    lora = lora_specs(configs["checkpoint"]["transformer"], lora_rank)
    total = sum(spec.nbytes for spec in checkpoint + gemma + upscaler + lora)
    if manifest.exists():
        manifest.unlink()
    if (folder / GEMMA_NAME).exists():
        shutil.rmtree(folder / GEMMA_NAME)
    (folder / GEMMA_NAME).mkdir(parents=True)
    free = shutil.disk_usage(folder).free
    if total > free:
        raise SystemExit(f"random weights need {total / 1e9:.1f} GB but {folder} has {free / 1e9:.1f} GB free; "
                         "use --storage fp8 (the DiT at half size), --scale-down, or another folder")  # fmt: skip
    log(f"writing {total / 1e9:.1f} GB of random weights to {folder} (DiT storage {storage}, scale 1/{scale_down})")
    shards = _shards(gemma)
    shard_names = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    gemma_dir = folder / GEMMA_NAME
    (gemma_dir / "config.json").write_text(json.dumps(configs["gemma"], indent=2))
    index = {"metadata": {"total_size": sum(spec.nbytes for spec in gemma)},
             "weight_map": {spec.name: name for shard, name in zip(shards, shard_names) for spec in shard}}  # fmt: skip
    (gemma_dir / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    _gemma_tokenizer(gemma_dir)
    jobs = [(folder / CHECKPOINT_NAME, checkpoint, metadata),
            (folder / UPSCALER_NAME, upscaler, {"config": json.dumps(configs["upscaler"])}),
            (folder / LORA_NAME, lora, {"format": "pt"})]  # fmt: skip
    jobs += [(gemma_dir / name, shard, {"format": "pt"}) for name, shard in zip(shard_names, shards)]
    pool = RandomPool(seed)
    log(f"names and shapes ready after {time.perf_counter() - started:.1f} s")
    with ThreadPoolExecutor(max_workers=8) as executor:
        futures = [executor.submit(write_safetensors, path, specs, meta, pool, seed + i)
                   for i, (path, specs, meta) in enumerate(jobs)]  # fmt: skip
        for future in futures:
            future.result()
    seconds = time.perf_counter() - started
    manifest.write_text(json.dumps({"settings": settings, "bytes": total, "seconds": seconds}))
    log(f"wrote {total / 1e9:.1f} GB in {seconds:.0f} s ({total / 1e9 / seconds:.2f} GB/s)")
    return paths


def write_checkpoint(path: str | Path, storage: str = "bf16", scale_down: int = 1, seed: int = 0, log=print) -> None:
    """Only the single-file checkpoint (DiT, VAEs, vocoder, connectors), e.g. a bf16 DiT beside
    an fp8 set's Gemma and upscaler, with the same names, shapes and values as in a full set."""
    path = Path(path)
    specs, metadata = model_checkpoint_specs(model_configs(scale_down), storage)
    total = sum(spec.nbytes for spec in specs)
    free = shutil.disk_usage(path.parent).free
    if total > free:
        raise SystemExit(f"the checkpoint needs {total / 1e9:.1f} GB but {path.parent} has {free / 1e9:.1f} GB free")
    started = time.perf_counter()
    write_safetensors(path, specs, metadata, RandomPool(seed), seed)
    seconds = time.perf_counter() - started
    log(f"wrote {total / 1e9:.1f} GB to {path} in {seconds:.0f} s ({total / 1e9 / seconds:.2f} GB/s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--storage", default="bf16", choices=["bf16", "fp8"], help="how the DiT is stored")
    parser.add_argument("--scale-down", type=int, default=1, help="divide widths and depths (1, 2, 4, 8, 16)")
    parser.add_argument("--lora-rank", type=int, default=32)
    parser.add_argument("--checkpoint-only", action="store_true", help=f"write only {CHECKPOINT_NAME}")
    args = parser.parse_args()
    args.folder.mkdir(parents=True, exist_ok=True)
    if args.checkpoint_only:
        write_checkpoint(args.folder / CHECKPOINT_NAME, args.storage, args.scale_down)
        return
    print(json.dumps(write_model_files(args.folder, args.storage, args.scale_down, args.lora_rank), indent=2))


if __name__ == "__main__":
    main()
