"""A checkpoint is opened once: through a whole `generate` run each file's safetensors header is
parsed once and `mx.load` maps a file once per model built from it; the latent statistics the
upscaler un/normalises with are read from their byte ranges, with no VAE encoder built.

Before the shared `Checkpoint`, a one-stage run on the tiny checkpoint parsed its header 30
times and mapped it with `mx.load` 10 times (the distilled two-stage run: 34 and 12)."""

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from mlx import nn
from mlx.utils import tree_flatten
from reference import save_checkpoint
from safetensors.torch import load_file, save_file

import LTX_2_MLX.loader.checkpoint as checkpoint_module
from LTX_2_MLX.cli import main
from LTX_2_MLX.loader import staging
from LTX_2_MLX.loader.checkpoint import Checkpoint, CheckpointError
from LTX_2_MLX.loader.video_vae import load_latent_statistics, load_video_vae
from LTX_2_MLX.model.video_vae.video_vae import VideoEncoder
from LTX_2_MLX.pipelines.model_ledger import ModelLedger

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

CHECKPOINT = "ltx-tiny.safetensors"
GEMMA_SHARD = "model.safetensors"
UPSCALER = "upscaler.safetensors"


@dataclass
class Reads:
    headers: Counter = field(default_factory=Counter)  # file name -> header parses
    loads: Counter = field(default_factory=Counter)  # file name -> mx.load calls
    models: int = 0  # modules given weights (every loader ends in one load_weights)
    encoders: int = 0  # video VAE encoders built


@pytest.fixture
def reads(monkeypatch):
    """What is read from disk from here on, starting with no header cached."""
    monkeypatch.setattr(checkpoint_module, "_OPENED", {})
    counted = Reads()
    read_header, load, load_weights, build_encoder = (
        checkpoint_module._read_header, mx.load, nn.Module.load_weights, VideoEncoder.__init__
    )  # fmt: skip

    def counting_read_header(path, *args):
        counted.headers[Path(path).name] += 1
        return read_header(path, *args)

    def counting_load(path, *args, **kwargs):
        counted.loads[Path(path).name] += 1
        return load(path, *args, **kwargs)

    def counting_load_weights(self, *args, **kwargs):
        counted.models += 1
        return load_weights(self, *args, **kwargs)

    def counting_encoder(self, *args, **kwargs):
        counted.encoders += 1
        build_encoder(self, *args, **kwargs)

    monkeypatch.setattr(checkpoint_module, "_read_header", counting_read_header)
    monkeypatch.setattr(mx, "load", counting_load)
    monkeypatch.setattr(nn.Module, "load_weights", counting_load_weights)
    monkeypatch.setattr(VideoEncoder, "__init__", counting_encoder)
    return counted


def generate_tiny(model_files, output, pipeline: str, *extra: str):
    """`ltx2-mlx generate` on the tiny files: 9 frames, 64x64 in 2 steps (one-stage) or 128x128."""
    checkpoint, gemma, _, upscaler = model_files[:4]
    args = ["generate", "--checkpoint-path", checkpoint, "--gemma-path", str(gemma), "--prompt", "a red fox runs",
            "--output-path", str(output), "--num-frames", "9", "--dtype", "float32", "--no-tiled-decode",
            "--pipeline", pipeline]  # fmt: skip
    if pipeline == "one-stage":
        args += ["--height", "64", "--width", "64", "--num-inference-steps", "2"]
    else:
        args += ["--height", "128", "--width", "128", "--spatial-upscaler-path", str(upscaler)]
    result = CliRunner().invoke(main, [*args, *extra], catch_exceptions=False)
    assert result.exit_code == 0, result.output


def test_one_stage_generation_parses_each_header_once_and_maps_once_per_model(model_files, tmp_path, reads):
    generate_tiny(model_files, tmp_path / "fox.mp4", "one-stage")
    assert reads.headers == {CHECKPOINT: 1, GEMMA_SHARD: 1}
    # The checkpoint feeds the text embeddings processor, the DiT, the video decoder, the audio
    # decoder and the vocoder; Gemma's one shard what stays resident (embedding, final norm) and
    # the one pass of its streamed layers that encodes both prompts.
    assert reads.loads == {CHECKPOINT: 5, GEMMA_SHARD: 2}
    # Six models loaded whole, and each streamed Gemma layer set once.
    config = json.loads((model_files[1] / "config.json").read_text())
    assert reads.models == 6 + config.get("text_config", config)["num_hidden_layers"]


def test_distilled_generation_parses_each_header_once_and_maps_once_per_model(model_files, tmp_path, reads):
    generate_tiny(model_files, tmp_path / "fox.mp4", "distilled")
    assert reads.headers == {CHECKPOINT: 1, GEMMA_SHARD: 1, UPSCALER: 1}
    # As one-stage, plus the upscaler; the DiT is loaded once for both stages, and the
    # statistics around the upscaler come from byte ranges.
    assert reads.loads == {CHECKPOINT: 5, GEMMA_SHARD: 2, UPSCALER: 1}
    assert sum(reads.loads.values()) <= reads.models


def test_distilled_generation_builds_no_encoder_for_the_statistics(model_files, tmp_path, reads):
    generate_tiny(model_files, tmp_path / "fox.mp4", "distilled")  # no image: nothing to encode
    assert reads.encoders == 0


def test_latent_statistics_equal_the_encoders_and_build_no_encoder(model_files, reads):
    ledger = ModelLedger(model_files[0], dtype=mx.bfloat16)
    statistics = ledger.latent_statistics()
    assert reads.encoders == 0 and not reads.loads  # read from byte ranges, nothing mapped
    encoder = ledger.video_encoder()
    expected = encoder.per_channel_statistics
    for name in ("mean_of_means", "std_of_means"):
        ours, theirs = getattr(statistics, name), getattr(expected, name)
        assert ours.dtype == theirs.dtype == mx.bfloat16 and mx.array_equal(ours, theirs).item(), name
    assert float(mx.abs(statistics.std_of_means - 1).max()) > 0.01  # the file's values, not the defaults
    latent = mx.random.normal((1, encoder.latent_channels, 2, 3, 3), key=mx.random.key(0)).astype(mx.bfloat16)
    assert mx.array_equal(statistics.un_normalize(latent), expected.un_normalize(latent)).item()
    assert mx.array_equal(statistics.normalize(latent), expected.normalize(latent)).item()


@pytest.mark.parametrize("layout", ["encoder's own", "own and shared"])
def test_latent_statistics_follow_the_encoder_for_other_layouts(model_files, tmp_path, layout):
    """Files may also carry `vae.encoder.per_channel_statistics.*`; the shared copy wins, as in
    load_video_vae (and ltx-core's key map)."""
    tensors = load_file(model_files[0])
    config = Checkpoint.open(model_files[0]).config()
    shared = {k: v for k, v in tensors.items() if k.startswith("vae.per_channel_statistics.")}
    for key, value in shared.items():
        tensors[key.replace("vae.", "vae.encoder.", 1)] = value * 2 if layout == "own and shared" else value
        if layout == "encoder's own":
            del tensors[key]
    path = save_checkpoint(tmp_path / "vae-layout.safetensors", tensors, config)
    statistics = load_latent_statistics(path, dtype=mx.float32)
    expected = load_video_vae(path, dtype=mx.float32, decoder=False).encoder.per_channel_statistics
    assert mx.array_equal(statistics.mean_of_means, expected.mean_of_means).item()
    assert mx.array_equal(statistics.std_of_means, expected.std_of_means).item()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.uint8,
                                   torch.float8_e4m3fn])  # fmt: skip
def test_read_tensor_matches_mx_load(tmp_path, dtype):
    values = torch.linspace(-3, 3, 24).reshape(2, 3, 4)
    path = tmp_path / "one.safetensors"
    save_file({"a.small": values.to(dtype), "b.other": torch.zeros(5)}, str(path))
    checkpoint = Checkpoint.open(path)
    for decode_fp8 in (True, False):
        read = checkpoint.read_tensor("a.small", decode_fp8=decode_fp8)
        (loaded,) = checkpoint.load("a.", decode_fp8=decode_fp8).values()
        assert read.dtype == loaded.dtype and read.shape == loaded.shape == (2, 3, 4)
        assert mx.array_equal(read, loaded).item()
    with pytest.raises(CheckpointError, match="has no tensor a.missing"):
        checkpoint.read_tensor("a.missing")


def test_a_rewritten_file_is_read_again(tmp_path, reads):
    path = tmp_path / "changing.safetensors"
    save_file({"x": torch.ones(3)}, str(path), metadata={"version": "1"})
    assert Checkpoint.open(path).metadata == {"version": "1"}
    assert Checkpoint.open(str(path)).stored_bytes() == 12 and reads.headers[path.name] == 1
    save_file({"x": torch.ones(3), "y": torch.ones(2, dtype=torch.float16)}, str(path), metadata={"version": "2"})
    rewritten = Checkpoint.open(path)
    assert rewritten.metadata == {"version": "2"} and rewritten.stored_bytes() == 16
    assert reads.headers[path.name] == 2
    assert np.array_equal(np.array(rewritten.read_tensor("y")), np.ones(2, np.float16))


def test_config_is_a_copy(model_files):
    checkpoint = Checkpoint.open(model_files[0])
    changed = checkpoint.config()
    changed["vae"]["latent_channels"] = -1
    changed.pop("transformer")
    assert checkpoint.config("transformer")["vae"]["latent_channels"] > 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.int64, torch.bool,
                                   torch.float8_e4m3fn])  # fmt: skip
def test_reading_for_the_gpu_keeps_every_bit(tmp_path, monkeypatch, dtype):
    # What the loaders do on CUDA (checkpoint._HOST_READ): lazy loads read on the CPU stream,
    # resident ones through the staging buffers, both copied to the GPU as integers, so that -0,
    # NaN, infinities and subnormals come through bit for bit.
    special = torch.tensor([-0.0, float("nan"), float("inf"), -float("inf"), 1e-40, -2.5e-39, 3.0, -1.0])
    values = special if dtype.is_floating_point else torch.arange(-4, 4)
    path = tmp_path / "special.safetensors"
    save_file({"a.values": values.to(dtype).reshape(2, 4), "a.scalar": torch.tensor(7).to(dtype),
               "a.empty": torch.zeros(0, 3).to(dtype)}, str(path))  # fmt: skip
    checkpoint = Checkpoint.open(path)
    monkeypatch.setattr(checkpoint_module, "_HOST_READ", True)
    for decode_fp8 in (True, False):
        for resident in (False, True):
            loaded = checkpoint.load("a.", decode_fp8=decode_fp8, resident=resident)
            for name, value in loaded.items():
                read = checkpoint.read_tensor(f"a.{name}", decode_fp8=decode_fp8)
                assert value.dtype == read.dtype and value.shape == read.shape
                bits = {1: mx.uint8, 2: mx.uint16, 4: mx.uint32, 8: mx.uint64}[read.itemsize]
                assert mx.array_equal(value.view(bits), read.view(bits)).item(), name


@pytest.mark.parametrize("decode_fp8", [True, False])
def test_resident_reads_are_read_at_once_bit_for_bit_and_let_go(tmp_path, monkeypatch, decode_fp8):
    # Checkpoint.load_resident as on CUDA (_HOST_READ): read through the two staging buffers,
    # a tensor larger than a buffer in pieces, odd sizes copied bytewise. The tensors `load`
    # gives, bit for bit, only the kept keys, read before it returns (rewriting the file after
    # changes nothing), without mx.load, and nothing held beside the copies but the buffers.
    generator = torch.Generator().manual_seed(0)
    dtypes = [torch.float32, torch.bfloat16, torch.float8_e4m3fn, torch.float16]  # 64 KiB each as stored
    tensors = {
        f"m.{i}.w": torch.randn(64, 1024 // dtypes[i % 4].itemsize, generator=generator).to(dtypes[i % 4])
        for i in range(24)
    }
    tensors |= {"m.big.w": torch.randn(300, 257, generator=generator), "m.odd.w": torch.arange(7, dtype=torch.uint8)}
    tensors |= {"m.skip.w": torch.ones(64, 96), "other.w": torch.ones(8)}
    path = tmp_path / "resident.safetensors"
    save_file(tensors, str(path))
    checkpoint = Checkpoint.open(path)
    kept = [f"{i}.w" for i in range(24)] + ["big.w", "odd.w"]
    expected = {key: checkpoint.read_tensor(f"m.{key}", decode_fp8=decode_fp8) for key in kept}
    mx.eval(expected)
    monkeypatch.setattr(checkpoint_module, "_HOST_READ", True)
    monkeypatch.setattr(staging, "_BUFFER_BYTES", 2**17)  # the big tensor (301 KiB) in three pieces
    loads = []
    load = mx.load
    monkeypatch.setattr(mx, "load", lambda *args, **kwargs: loads.append(args) or load(*args, **kwargs))
    mx.synchronize()
    mx.clear_cache()
    mx.reset_peak_memory()
    before = mx.get_active_memory()
    loaded = checkpoint.load_resident("m.", decode_fp8, keep=lambda key: not key.startswith("skip."))
    peak = mx.get_peak_memory() - before
    assert not loads and set(loaded) == set(expected)
    # The copies and the two buffers: the big tensor's pieces are copied into one allocation.
    allowed = sum(value.nbytes for value in loaded.values()) + 2 * 2**17 + 4096
    assert peak <= allowed, "reads held beside their copies"
    path.write_bytes(path.read_bytes()[:-4096] + bytes(4096))  # a lazy tensor would now read zeros
    for key, value in loaded.items():
        bits = {1: mx.uint8, 2: mx.uint16, 4: mx.uint32}[value.itemsize]
        assert value.dtype == expected[key].dtype and value.shape == expected[key].shape
        assert mx.array_equal(value.view(bits), expected[key].view(bits)).item(), key


def test_a_generation_read_for_the_gpu_is_bitwise_the_same(model_files, tmp_path, monkeypatch):
    # Every loader through the CUDA read paths (lazy: CPU-stream mx.load, then device_copy;
    # resident: the staging buffers), the streamed DiT's blocks and Gemma's layers read one at
    # a time through the buffers: the same video, byte for byte.
    streams, staged = [], []
    load, read = mx.load, staging.read

    def recording_load(path, *args, **kwargs):
        streams.append(kwargs.get("stream"))
        return load(path, *args, **kwargs)

    monkeypatch.setattr(mx, "load", recording_load)
    monkeypatch.setattr(staging, "read", lambda path, ranges, *a: staged.append(set(ranges)) or read(path, ranges, *a))
    outputs = {}
    for host_read in (False, True):
        monkeypatch.setattr(checkpoint_module, "_HOST_READ", host_read)
        streams.clear()
        outputs[host_read] = tmp_path / f"fox-{host_read}.mp4"
        generate_tiny(model_files, outputs[host_read], "one-stage", "--low-memory")
        assert streams and all((stream is not None and stream == mx.cpu) == host_read for stream in streams)
    for block in ("model.diffusion_model.transformer_blocks.0.", "language_model.model.layers.0."):
        reads = [names for names in staged if any(name.startswith(block) for name in names)]
        assert reads and all(name.startswith(block) for names in reads for name in names), "a block read with others"
    assert any("language_model.model.embed_tokens.weight" in names for names in staged)
    assert outputs[True].read_bytes() == outputs[False].read_bytes()


@pytest.mark.parametrize("dtype, evaluate, resident", [("file's", True, True), ("other", True, False),
                                                       ("file's", False, False)])  # fmt: skip
def test_the_dit_is_read_at_once_only_when_kept_as_stored_and_evaluated(model_files, monkeypatch, dtype, evaluate,
                                                                          resident):  # fmt: skip
    # On CUDA a resident DiT's file tensors are all read before conversion: only worth it when
    # casting leaves them as they are (no second copy of the model) and they are used now.
    from LTX_2_MLX.loader.transformer import load_transformer

    checkpoint = Checkpoint.open(model_files[0])
    stored = {e.dtype for n, e in checkpoint.entries.items() if n.startswith("model.diffusion_model.")}
    assert stored == {"F32"}, stored  # the tiny files: float32 throughout
    monkeypatch.setattr(checkpoint_module, "_HOST_READ", True)
    calls = []
    load_resident = Checkpoint.load_resident
    monkeypatch.setattr(Checkpoint, "load_resident", lambda *a, **k: calls.append(a[1]) or load_resident(*a, **k))
    model = load_transformer(checkpoint, mx.float32 if dtype == "file's" else mx.bfloat16, evaluate=evaluate)
    assert calls == (["model.diffusion_model."] if resident else [])
    expected = load_transformer(checkpoint, mx.float32 if dtype == "file's" else mx.bfloat16)
    for (name, value), (_, want) in zip(tree_flatten(model.parameters()), tree_flatten(expected.parameters())):
        assert mx.array_equal(value, want).item(), name
