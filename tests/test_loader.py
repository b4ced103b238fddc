"""Bad checkpoints fail with one clear error naming the file; conversion round-trips."""

import json
import subprocess
import sys

import mlx.core as mx
import pytest
import torch
from reference import assert_matches, save_checkpoint
from transformer_fixtures import (
    build_reference_transformer,
    reference_modalities,
    save_transformer_checkpoint,
    tiny_transformer_config,
    to_mlx_modality,
)

from LTX_2_MLX.loader import CheckpointError, load_transformer
from LTX_2_MLX.loader.convert import convert_checkpoint


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    config = tiny_transformer_config("2.0")
    model = build_reference_transformer(config, seed=7)
    path = save_transformer_checkpoint(tmp_path_factory.mktemp("loader") / "tiny.safetensors", model, config)
    return config, model, path


def test_truncated_file_is_refused(tiny, tmp_path):
    data = open(tiny[2], "rb").read()
    bad = tmp_path / "truncated.safetensors"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_transformer(bad)


def test_non_safetensors_file_is_refused(tmp_path):
    bad = tmp_path / "model.ckpt"
    bad.write_bytes(b"PK\x03\x04 not a safetensors file at all" * 10)
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        load_transformer(bad)


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        load_transformer(tmp_path / "absent.safetensors")


def test_vae_file_passed_as_transformer_is_refused(tmp_path):
    path = save_checkpoint(tmp_path / "vae.safetensors", {"vae.decoder.conv_in.weight": torch.zeros(2, 2)},
                           {"vae": {"dims": 3}})  # fmt: skip
    with pytest.raises(CheckpointError, match="no 'transformer' section"):
        load_transformer(path)


def test_upscaler_file_passed_as_transformer_is_refused(tmp_path):
    path = save_checkpoint(tmp_path / "up.safetensors", {"initial_conv.weight": torch.zeros(2, 2)},
                           {"in_channels": 128, "mid_channels": 512})  # fmt: skip
    with pytest.raises(CheckpointError, match="no 'transformer' section"):
        load_transformer(path)


def test_metadata_without_config_is_refused(tiny, tmp_path):
    path = save_checkpoint(tmp_path / "noconfig.safetensors", {"model.diffusion_model.x": torch.zeros(1)}, None)
    with pytest.raises(CheckpointError, match="no 'config' in the safetensors metadata"):
        load_transformer(path)


def test_config_missing_required_key_is_refused(tiny, tmp_path):
    config = json.loads(json.dumps(tiny[0]))
    del config["transformer"]["qk_norm"]
    path = save_transformer_checkpoint(tmp_path / "badconfig.safetensors", tiny[1], config)
    with pytest.raises(CheckpointError, match="qk_norm"):
        load_transformer(path)


@pytest.mark.parametrize("damage", ["missing", "unexpected", "wrong shape"])
def test_weights_not_matching_config_are_refused(tiny, tmp_path, damage):
    config, model, _ = tiny
    state = {f"model.diffusion_model.{k}": v for k, v in model.state_dict().items()}
    key = "model.diffusion_model.transformer_blocks.1.attn1.to_q.weight"
    if damage == "missing":
        del state[key]
    elif damage == "unexpected":
        state["model.diffusion_model.transformer_blocks.2.attn1.to_q.weight"] = state[key].clone()
    else:
        state[key] = state[key][:, :-1]
    path = save_checkpoint(tmp_path / f"{damage}.safetensors", state, config)
    with pytest.raises(CheckpointError, match=f"{damage}: transformer_blocks"):
        load_transformer(path)


def test_converted_checkpoint_loads_back_the_same(tiny, tmp_path):
    config, reference, path = tiny
    converted = tmp_path / "tiny-bf16.safetensors"
    convert_checkpoint(path, converted, mx.bfloat16)
    video, audio = reference_modalities(config, batch=1)
    original = load_transformer(path, dtype=mx.bfloat16)(
        to_mlx_modality(video, mx.bfloat16), to_mlx_modality(audio, mx.bfloat16)
    )
    reloaded = load_transformer(converted, dtype=mx.bfloat16)(
        to_mlx_modality(video, mx.bfloat16), to_mlx_modality(audio, mx.bfloat16)
    )
    assert_matches("converted bf16 checkpoint reloads identically (video)", reloaded[0], original[0], tol=0.0)
    assert_matches("converted bf16 checkpoint reloads identically (audio)", reloaded[1], original[1], tol=0.0)


def test_cli_reports_bad_checkpoint_in_one_line_and_writes_nothing(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 64)
    out = tmp_path / "out.safetensors"
    result = subprocess.run([sys.executable, "-m", "LTX_2_MLX.cli", "convert", str(bad), str(out)],
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode != 0
    assert result.stderr.strip().count("\n") == 0 and str(bad) in result.stderr
    assert not out.exists() and not list(tmp_path.glob("*.partial"))


def test_cli_inspect_describes_checkpoint(tiny):
    result = subprocess.run([sys.executable, "-m", "LTX_2_MLX.cli", "inspect", tiny[2]], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "ltx av model, 2 layers, width 32 (audio 16)" in result.stdout


def test_checkpoint_with_another_extension_loads(tiny, tmp_path):
    renamed = tmp_path / "tiny.st"
    renamed.write_bytes(open(tiny[2], "rb").read())
    assert load_transformer(renamed, dtype=mx.float32).config.num_layers == 2


def test_fp8_checkpoint_stays_fp8_and_decodes_to_its_values(tiny, tmp_path):
    """Official fp8 files store the block linears as float8_e4m3fn: load_transformer_as_stored
    keeps those layers in fp8 (upcast on the fly), never reading the bytes as if they were
    numbers; the float loader refuses the file, naming the one that reads it."""
    from LTX_2_MLX.quantization import Fp8Linear, load_transformer_as_stored

    config, reference, _ = tiny
    state = {f"model.diffusion_model.{k}": v for k, v in reference.state_dict().items()}
    fp8 = {k: v.to(torch.float8_e4m3fn) if ".to_q." in k or ".ff.net." in k else v for k, v in state.items()}
    path = save_checkpoint(tmp_path / "tiny-fp8.safetensors", fp8, config)
    with pytest.raises(CheckpointError, match="stored in fp8; load it with .*load_transformer_as_stored"):
        load_transformer(path)
    layer = load_transformer_as_stored(path, dtype=mx.float32).transformer_blocks[0].attn1.to_q
    assert isinstance(layer, Fp8Linear)
    expected = fp8["model.diffusion_model.transformer_blocks.0.attn1.to_q.weight"].float()
    decoded = mx.from_fp8(layer.weight, dtype=mx.float32)
    assert_matches("fp8 checkpoint weight decoded exactly", decoded, expected, tol=0.0)


def test_cli_quantize_writes_a_file_load_transformer_as_stored_reads_back(tiny, tmp_path):
    from LTX_2_MLX.quantization import load_transformer_as_stored, prepare_transformer

    config, _, path = tiny
    out = tmp_path / "tiny-int8.safetensors"
    result = subprocess.run([sys.executable, "-m", "LTX_2_MLX.cli", "quantize", path, str(out), "--mode", "int8"],
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stderr
    video, audio = reference_modalities(config, batch=1)
    inputs = (to_mlx_modality(video, mx.bfloat16), to_mlx_modality(audio, mx.bfloat16))
    expected = prepare_transformer(load_transformer(path, dtype=mx.bfloat16), [], "int8")(*inputs)
    reloaded = load_transformer_as_stored(out)(*inputs)
    assert_matches("quantize CLI int8 file reloads identically (video)", reloaded[0], expected[0], tol=0.0)
