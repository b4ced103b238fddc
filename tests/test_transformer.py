"""The MLX DiT against ltx-core's LTXModel: tiny seeded models of both generations, saved as
official checkpoints and loaded through load_transformer."""

import mlx.core as mx
import numpy as np
import pytest
import torch
from ltx_core.model.transformer.model import X0Model as ReferenceX0Model
from reference import PARITY_FIGURES, assert_cosine, assert_matches
from transformer_fixtures import (
    ALL_ROWS_STG,
    MIXED_STG,
    build_reference_transformer,
    perturbation_configs,
    reference_modalities,
    save_transformer_checkpoint,
    tiny_transformer_config,
    to_mlx_modality,
)

from LTX_2_MLX.loader import load_transformer
from LTX_2_MLX.model.transformer import X0Model

# name -> (generation, audio, rope_type, frequencies_precision)
VARIANTS = {
    "ltx2.0-av-split-f64": ("2.0", True, "split", "float64"),
    "ltx2.3-av-split-f64": ("2.3", True, "split", "float64"),
    "ltx2.0-av-interleaved-f32": ("2.0", True, "interleaved", "float32"),
    "ltx2.0-video-interleaved-f64": ("2.0", False, "interleaved", "float64"),
    "ltx2.3-video-split-f32": ("2.3", False, "split", "float32"),
}


@pytest.fixture(scope="session")
def tiny_transformers(tmp_path_factory):
    """name -> (config, reference model, checkpoint path), built once."""
    folder = tmp_path_factory.mktemp("transformers")
    built = {}
    for seed, (name, (generation, audio, rope, precision)) in enumerate(VARIANTS.items()):
        config = tiny_transformer_config(generation, rope, precision)
        model = build_reference_transformer(config, audio=audio, seed=seed)
        built[name] = (config, model, save_transformer_checkpoint(folder / f"{name}.safetensors", model, config))
    return built


def run_both(entry, audio: bool, stg_rows, dtype=mx.float32):
    config, reference, path = entry
    video, audio_in = reference_modalities(config, batch=len(stg_rows), audio=audio)
    ref_perturbations, mlx_perturbations = perturbation_configs(stg_rows)
    with torch.no_grad():
        expected = reference(video, audio_in, ref_perturbations)
    model = load_transformer(path, dtype=dtype)
    actual = model(to_mlx_modality(video, dtype), to_mlx_modality(audio_in, dtype), mlx_perturbations)
    return expected, actual


@pytest.mark.parametrize("name", list(VARIANTS))
def test_transformer_matches_reference_fp32(tiny_transformers, name):
    audio = VARIANTS[name][1]
    (ref_video, ref_audio), (video, audio_out) = run_both(tiny_transformers[name], audio, MIXED_STG)
    assert_matches(f"transformer {name} fp32 video velocity", video, ref_video)
    if audio:
        assert_matches(f"transformer {name} fp32 audio velocity", audio_out, ref_audio)
    else:
        assert audio_out is None and ref_audio is None


@pytest.mark.parametrize("name", ["ltx2.0-av-split-f64", "ltx2.3-av-split-f64"])
def test_transformer_stg_on_every_row_matches_reference_fp32(tiny_transformers, name):
    (ref_video, ref_audio), (video, audio_out) = run_both(tiny_transformers[name], True, ALL_ROWS_STG)
    assert_matches(f"transformer {name} fp32 all-rows STG video", video, ref_video)
    assert_matches(f"transformer {name} fp32 all-rows STG audio", audio_out, ref_audio)


@pytest.mark.parametrize("name", ["ltx2.0-av-split-f64", "ltx2.3-av-split-f64"])
def test_transformer_bf16_close_to_reference_fp32(tiny_transformers, name):
    (ref_video, ref_audio), (video, audio_out) = run_both(tiny_transformers[name], True, MIXED_STG, mx.bfloat16)
    assert video.dtype == mx.bfloat16
    assert_cosine(f"transformer {name} bf16 video velocity", video, ref_video)
    assert_cosine(f"transformer {name} bf16 audio velocity", audio_out, ref_audio)


def test_x0_model_matches_reference(tiny_transformers):
    config, reference, path = tiny_transformers["ltx2.0-av-split-f64"]
    video, audio = reference_modalities(config, batch=2)
    with torch.no_grad():
        ref_video, ref_audio = ReferenceX0Model(reference)(video, audio, perturbation_configs([[], []])[0])
    ours = X0Model(load_transformer(path, dtype=mx.float32))
    out_video, out_audio = ours(to_mlx_modality(video), to_mlx_modality(audio), None)
    assert_matches("X0Model fp32 denoised video", out_video, ref_video)
    assert_matches("X0Model fp32 denoised audio", out_audio, ref_audio)


def test_disabled_stream_is_passed_through(tiny_transformers):
    """A modality with enabled=False skips its own updates but still feeds the other stream."""
    import dataclasses

    config, reference, path = tiny_transformers["ltx2.0-av-split-f64"]
    video, audio = reference_modalities(config, batch=1)
    audio = dataclasses.replace(audio, enabled=False)
    with torch.no_grad():
        ref_video, ref_audio = reference(video, audio, perturbation_configs([[]])[0])
    out_video, out_audio = load_transformer(path, dtype=mx.float32)(to_mlx_modality(video), to_mlx_modality(audio))
    assert_matches("transformer fp32 audio disabled: video", out_video, ref_video)
    assert_matches("transformer fp32 audio disabled: audio", out_audio, ref_audio)


@pytest.mark.parametrize("precision", ["float64", "float32"])
@pytest.mark.parametrize(("num_dims", "dim"), [(3, 64), (1, 16), (1, 32), (3, 4096), (1, 2048), (1, 3840)])
def test_rope_frequency_grid_matches_reference(precision, num_dims, dim):
    """Within two ulps of the reference's grid (numpy's in float64, PyTorch's CPU linspace/pow in
    float32). Bit equality is not asked for: float32 `pow` differs by an ulp between CPUs
    (numpy's AVX-512 kernels vs torch's), and a parity test must hold on every CPU."""
    from ltx_core.model.transformer.rope import generate_freq_grid_np, generate_freq_grid_pytorch

    from LTX_2_MLX.model.transformer.rope import frequency_grid

    generator = generate_freq_grid_np if precision == "float64" else generate_freq_grid_pytorch
    expected = generator(10000.0, num_dims, dim).numpy()
    ours = np.asarray(frequency_grid(10000.0, num_dims, dim, precision == "float64"), dtype=expected.dtype)
    ulps = float(np.max(np.abs(ours - expected) / np.spacing(np.abs(expected))))
    PARITY_FIGURES.append((f"rope frequency grid {precision} dims={num_dims} dim={dim}", "max ulps", ulps))
    assert ulps <= 2.0, f"{ulps} ulps from the reference's grid"


def test_uniform_timesteps_are_embedded_once_and_match_reference_fp32(tiny_transformers):
    """Every video token at its row's sigma (no conditioned frame): the AdaLN values are computed
    once per row and broadcast over the tokens; mixed rows keep their per-token values."""
    import dataclasses

    from LTX_2_MLX.model.transformer.model import shared_timestep

    config, reference, path = tiny_transformers["ltx2.3-av-split-f64"]
    video, audio = reference_modalities(config, batch=2)
    video = dataclasses.replace(video, timesteps=torch.ones_like(video.timesteps) * video.sigma[:, None, None])
    ours = to_mlx_modality(video)
    assert shared_timestep(ours.timesteps).shape == (2, 1, 1)
    mixed = mx.concatenate([ours.timesteps[:, :1] * 0, ours.timesteps[:, 1:]], axis=1)
    assert shared_timestep(mixed).shape == ours.timesteps.shape
    with torch.no_grad():
        ref_video, ref_audio = reference(video, audio, perturbation_configs([[], []])[0])
    out_video, out_audio = load_transformer(path, dtype=mx.float32)(ours, to_mlx_modality(audio))
    assert_matches("transformer fp32 uniform timesteps: video", out_video, ref_video)
    assert_matches("transformer fp32 uniform timesteps: audio", out_audio, ref_audio)
