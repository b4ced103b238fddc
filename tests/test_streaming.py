"""Weight streaming (ModelLedger(low_memory=True)) and chunked evaluation: a streamed DiT or
Gemma computes bitwise what the resident one does (float, LoRAs, fp8 / int8 / int4, files
stored quantized or in official fp8), while its peak memory stays under half the resident one's
for a model whose blocks dominate its weights."""

from dataclasses import replace

import mlx.core as mx
import numpy as np
import pytest
import torch
from reference import PARITY_FIGURES, REFUSALS, save_checkpoint
from transformer_fixtures import (
    MIXED_STG,
    build_reference_transformer,
    perturbation_configs,
    reference_modalities,
    save_transformer_checkpoint,
    tiny_transformer_config,
    to_mlx_modality,
)

from LTX_2_MLX.loader import load_transformer
from LTX_2_MLX.loader.lora import apply_loras
from LTX_2_MLX.loader.streaming import StreamedBlocks
from LTX_2_MLX.loader.text_encoder import load_text_encoder
from LTX_2_MLX.pipelines import ModelLedger
from LTX_2_MLX.quantization import (
    load_prepared_transformer,
    load_transformer_as_stored,
    prepare_transformer,
    quantize_transformer,
    save_quantized_transformer,
)
from LTX_2_MLX.quantization.streaming import load_streamed_transformer, streams

PREFIX = "model.diffusion_model."
BLOCK_LINEARS = ("attn1.to_q", "attn1.to_out.0", "audio_attn2.to_k", "ff.net.0.proj", "audio_ff.net.2")


def block_heavy_config(layers: int = 10) -> dict:
    """The tiny LTX-2.0 audio-video DiT, 64 wide in both streams (int8/int4 group size) and ten
    blocks deep, so the blocks hold most of its weights."""
    config = tiny_transformer_config("2.0")
    config["transformer"].update(
        num_layers=layers, attention_head_dim=32, audio_attention_head_dim=32, cross_attention_dim=64,
        audio_cross_attention_dim=64,
    )  # fmt: skip
    return config


def make_lora(path, shapes: dict[str, tuple[int, int]], seed: int, alpha: float | None = None) -> str:
    gen = torch.Generator().manual_seed(seed)
    tensors = {}
    for module, (out_dims, in_dims) in shapes.items():
        tensors[f"diffusion_model.{module}.lora_A.weight"] = torch.randn(4, in_dims, generator=gen) * 0.2
        tensors[f"diffusion_model.{module}.lora_B.weight"] = torch.randn(out_dims, 4, generator=gen) * 0.2
        if alpha is not None:
            tensors[f"diffusion_model.{module}.alpha"] = torch.tensor(alpha)
    return save_checkpoint(path, tensors, None)


@pytest.fixture(scope="module")
def dit(tmp_path_factory):
    folder = tmp_path_factory.mktemp("streaming")
    config = block_heavy_config()
    reference = build_reference_transformer(config, audio=True, seed=31)
    checkpoint = save_transformer_checkpoint(folder / "dit.safetensors", reference, config)
    shapes = {f"transformer_blocks.{i}.{name}": (64, 64) for i in (0, 3, 9) for name in ("attn1.to_q", "attn2.to_v")}
    shapes["transformer_blocks.4.ff.net.2"] = (64, 256)
    loras = [
        (make_lora(folder / "a.safetensors", {**shapes, "patchify_proj": (64, 16)}, seed=1), 0.8),
        (make_lora(folder / "b.safetensors", {"transformer_blocks.3.attn1.to_q": (64, 64)}, seed=2, alpha=2.0), 1.3),
    ]
    # An official-style scaled fp8 file: block Linears as e4m3 with a per-tensor weight_scale.
    tensors = {}
    for key, value in reference.state_dict().items():
        layer = key.removesuffix(".weight")
        if key.startswith("transformer_blocks.") and key.endswith(".weight") and layer.endswith(BLOCK_LINEARS):
            scale = value.abs().max() / 448.0
            tensors[PREFIX + key] = (value / scale).to(torch.float8_e4m3fn)
            tensors[PREFIX + layer + ".weight_scale"] = scale.reshape(()).float()
        else:
            tensors[PREFIX + key] = value
    fp8 = save_checkpoint(folder / "dit-fp8.safetensors", tensors, config)
    return dict(config=config, checkpoint=checkpoint, loras=loras, fp8=fp8, folder=folder)  # noqa: C408


def run(config, model, dtype=mx.float32):
    video, audio = reference_modalities(config, batch=len(MIXED_STG))
    _, perturbations = perturbation_configs(MIXED_STG)
    outputs = model(to_mlx_modality(video, dtype), to_mlx_modality(audio, dtype), perturbations)
    mx.eval(outputs)
    return outputs


def assert_same(name: str, ours, theirs) -> None:
    """Bitwise equal, every output."""
    ours, theirs = ([np.array(a.astype(mx.float32)) for a in arrays] for arrays in (ours, theirs))
    difference = max(float(np.abs(a - b).max()) for a, b in zip(ours, theirs))
    PARITY_FIGURES.append((name, "max|Δ| vs resident", difference))
    for a, b in zip(ours, theirs):
        assert np.array_equal(a, b), f"{name}: max|Δ| {difference}"


@pytest.mark.parametrize("dtype", [mx.float32, mx.bfloat16], ids=["fp32", "bf16"])
def test_streamed_dit_matches_resident_bitwise(dit, dtype):
    resident = run(dit["config"], load_transformer(dit["checkpoint"], dtype=dtype), dtype)
    streamed_model = load_streamed_transformer(dit["checkpoint"], dtype)
    assert streams(streamed_model) and len(streamed_model.transformer_blocks) == 10
    name = f"streamed DiT {'fp32' if dtype == mx.float32 else 'bf16'}"
    assert_same(name, run(dit["config"], streamed_model, dtype), resident)
    # A second forward reads the blocks again.
    assert_same(f"{name}, second pass", run(dit["config"], streamed_model, dtype), resident)


@pytest.mark.parametrize("quantization", [None, "fp8", "int8", "int4"])
def test_streamed_dit_with_loras_and_quantization_matches_resident(dit, quantization):
    resident_model = prepare_transformer(load_transformer(dit["checkpoint"], mx.float32), dit["loras"], quantization)
    resident = run(dit["config"], resident_model)
    streamed = run(dit["config"], load_streamed_transformer(dit["checkpoint"], mx.float32, dit["loras"], quantization))
    assert_same(f"streamed DiT, 2 LoRAs, {quantization or 'float'}", streamed, resident)
    # The LoRAs are fused, not silently dropped.
    plain = run(dit["config"], load_streamed_transformer(dit["checkpoint"], mx.float32, (), quantization))
    assert not np.array_equal(np.array(plain[0]), np.array(streamed[0]))


@pytest.mark.parametrize("mode", ["fp8", "int4"])
def test_streamed_quantized_file_matches_resident(dit, mode):
    path = dit["folder"] / f"dit-{mode}.safetensors"
    if not path.exists():
        save_quantized_transformer(quantize_transformer(load_transformer(dit["checkpoint"], mx.float32), mode), path,
                                   dit["checkpoint"])  # fmt: skip
    loras = dit["loras"] if mode == "fp8" else ()  # LoRAs do not fuse into stored int4 layers
    resident = run(dit["config"], prepare_transformer(load_transformer_as_stored(path), loras, None), mx.bfloat16)
    streamed = run(dit["config"], load_streamed_transformer(path, mx.bfloat16, loras), mx.bfloat16)
    assert_same(f"streamed {mode} file", streamed, resident)


def test_streamed_official_fp8_file_with_loras_matches_resident(dit):
    resident_model = prepare_transformer(load_transformer_as_stored(dit["fp8"], mx.float32), dit["loras"], None)
    resident = run(dit["config"], resident_model)
    streamed = run(dit["config"], load_streamed_transformer(dit["fp8"], mx.float32, dit["loras"]))
    assert_same("streamed official fp8 file, 2 LoRAs", streamed, resident)


@pytest.mark.parametrize("quantization", ["fp8", "int8", "int4"])
def test_official_fp8_file_quantized_further_streams_as_resident(dit, quantization):
    """--quantization on an fp8 file: fp8 keeps the file's e4m3 layers (and casts the rest);
    int8/int4 fuse the LoRAs in fp8, as the reference's fp8 path does, then dequantize and
    quantize each layer. Streamed equals resident bitwise, and stays near the fp8 model."""
    resident_model = prepare_transformer(load_transformer_as_stored(dit["fp8"], mx.float32), dit["loras"], quantization)
    resident = run(dit["config"], resident_model)
    streamed = run(dit["config"], load_streamed_transformer(dit["fp8"], mx.float32, dit["loras"], quantization))
    assert_same(f"streamed official fp8 file, 2 LoRAs, --quantization {quantization}", streamed, resident)
    as_stored = run(dit["config"], prepare_transformer(load_transformer_as_stored(dit["fp8"], mx.float32), dit["loras"],
                                                       None))  # fmt: skip
    for ours, stored in zip(resident, as_stored):
        ours, stored = np.array(ours), np.array(stored)
        relative = np.abs(ours - stored).max() / np.abs(stored).max()
        PARITY_FIGURES.append((f"fp8 file --quantization {quantization} vs as stored", "max|Δ|/max|ref|", relative))
        assert relative < {"fp8": 0.05, "int8": 0.05, "int4": 0.3}[quantization], relative


def test_quantize_command_takes_an_official_fp8_file_to_int4(dit):
    from click.testing import CliRunner

    from LTX_2_MLX.cli import main

    written = dit["folder"] / "from-fp8-int4.safetensors"
    result = CliRunner().invoke(main, ["quantize", dit["fp8"], str(written), "--mode", "int4"])
    assert result.exit_code == 0, result.output
    expected = run(dit["config"], prepare_transformer(load_transformer_as_stored(dit["fp8"], mx.bfloat16), [], "int4"),
                   mx.bfloat16)  # fmt: skip
    assert_same(
        "fp8 file quantized to int4 by `ltx2-mlx quantize`, reloaded",
        run(dit["config"], load_transformer_as_stored(written, mx.bfloat16), mx.bfloat16),
        expected,
    )
    again = CliRunner().invoke(main, ["quantize", dit["fp8"], str(dit["folder"] / "x.safetensors"), "--mode", "fp8"])
    assert again.exit_code != 0 and "is already fp8" in again.output
    REFUSALS.append(("quantize an fp8 file to fp8", again.output.strip().splitlines()[-1]))
    assert not (dit["folder"] / "x.safetensors").exists()


def test_guided_passes_share_one_read_of_the_streamed_blocks(dit, monkeypatch):
    """A guided step's passes (here: conditional, unconditional context, STG in block 3, the
    audio stream alone) run through one read of the streamed blocks, block by block, each
    pass bitwise as the resident model computes it alone."""
    from LTX_2_MLX.guidance.perturbations import (
        BatchedPerturbationConfig,
        Perturbation,
        PerturbationConfig,
        PerturbationType,
    )
    from LTX_2_MLX.model.transformer import X0Model
    from LTX_2_MLX.pipelines.denoising.guidance import TransformerPass, evaluate_passes

    video, audio = (to_mlx_modality(m, mx.float32) for m in reference_modalities(dit["config"], batch=1))
    stg = BatchedPerturbationConfig([PerturbationConfig([Perturbation(PerturbationType.SKIP_VIDEO_SELF_ATTN, [3])])])
    passes = [
        TransformerPass(video, audio),
        TransformerPass(replace(video, context=video.context * 0), replace(audio, context=audio.context * 0)),
        TransformerPass(video, audio, stg),
        TransformerPass(replace(video, enabled=False), audio),
    ]
    resident = X0Model(load_transformer(dit["checkpoint"], mx.float32))
    alone = [resident(p.video, p.audio, p.perturbations) for p in passes]
    streamed = X0Model(load_streamed_transformer(dit["checkpoint"], mx.float32))
    reads = []
    open_pass = streamed.velocity_model.transformer_blocks._open_pass
    monkeypatch.setattr(streamed.velocity_model.transformer_blocks, "_open_pass",
                        lambda: reads.append(1) or open_pass())  # fmt: skip
    together = evaluate_passes(streamed, passes)
    mx.eval(together)
    assert len(reads) == 1
    for index, (ours, theirs) in enumerate(zip(together, alone)):
        assert_same(f"guided pass {index} through one streamed read", ours, theirs)
    assert not np.array_equal(np.array(together[0][0]), np.array(together[2][0]))  # STG changed the pass
    # Resident blocks keep running the passes one after the other (one pass's activations at a time).
    assert_same("guided passes, resident", [x for pair in evaluate_passes(resident, passes) for x in pair],
                [x for pair in alone for x in pair])  # fmt: skip


def test_streaming_refuses_what_resident_refuses(dit):
    path = dit["folder"] / "dit-int4.safetensors"
    if not path.exists():
        save_quantized_transformer(quantize_transformer(load_transformer(dit["checkpoint"], mx.float32), "int4"), path,
                                   dit["checkpoint"])  # fmt: skip
    with pytest.raises(ValueError, match="cannot fuse LoRAs into int8/int4 layers"):
        load_streamed_transformer(path, mx.bfloat16, dit["loras"])
    with pytest.raises(ValueError, match="already quantized"):
        load_streamed_transformer(path, mx.bfloat16, (), "int8")


def test_chunked_evaluation_matches_unchunked(dit):
    model = load_transformer(dit["checkpoint"], mx.float32)
    whole = run(dit["config"], model)
    model.eval_blocks = 3  # 10 blocks: groups of 3, 3, 3 and a last 1 evaluated with the output
    assert_same("DiT evaluated every 3 blocks", run(dit["config"], model), whole)


@pytest.mark.parametrize("quantization", ["fp8", "int8", "int4"])
def test_loading_quantized_fuses_and_quantizes_block_by_block_as_the_whole_model_did(dit, quantization):
    """LoRAs fused and each block quantized as the file is read equals the whole model loaded,
    then LoRAs fused and quantized (fp8: cast, then fuse; int8/int4: fuse, then quantize)."""
    whole = load_transformer(dit["checkpoint"], mx.float32)
    if quantization == "fp8":
        apply_loras(quantize_transformer(whole, "fp8"), dit["loras"])
    else:
        quantize_transformer(apply_loras(whole, dit["loras"]), quantization)
    by_block = load_prepared_transformer(dit["checkpoint"], mx.float32, dit["loras"], quantization)
    assert_same(f"DiT loaded block by block, 2 LoRAs, {quantization}", run(dit["config"], by_block),
                run(dit["config"], whole))  # fmt: skip


def test_loading_quantized_never_holds_the_float_model(dit):
    def load_peak(load) -> int:
        mx.clear_cache()
        mx.reset_peak_memory()
        model = load()
        del model
        mx.clear_cache()
        return mx.get_peak_memory()

    float_model = load_peak(lambda: load_transformer(dit["checkpoint"], mx.float32))
    int4 = load_peak(lambda: load_prepared_transformer(dit["checkpoint"], mx.float32, dit["loras"], "int4"))
    PARITY_FIGURES.append(("DiT loaded to int4 with LoRAs: load peak / float model's", "ratio", int4 / float_model))
    assert int4 <= 0.5 * float_model, f"int4 load peak {int4} B, float model {float_model} B"


def test_streaming_peak_memory_is_under_half_the_resident(dit):
    def peak(load) -> int:
        mx.clear_cache()
        mx.reset_peak_memory()
        model = load()
        run(dit["config"], model)
        del model
        mx.clear_cache()
        return mx.get_peak_memory()

    resident = peak(lambda: load_transformer(dit["checkpoint"], mx.float32))
    streamed = peak(lambda: load_streamed_transformer(dit["checkpoint"], mx.float32))
    PARITY_FIGURES.append(("streamed DiT peak / resident peak (10 blocks)", "ratio", streamed / resident))
    assert streamed <= 0.5 * resident, f"streamed peak {streamed} B, resident {resident} B"


@pytest.mark.parametrize("bits", [None, 8])
def test_streamed_gemma_matches_resident(model_files, bits):
    gemma = model_files[1]
    encoder = load_text_encoder(gemma, dtype=mx.float32, quantize_bits=bits)
    input_ids, mask = encoder.tokenize("a red fox runs through fresh snow")
    resident = encoder.hidden_states(input_ids, mask)
    mx.eval(resident)
    chunked = load_text_encoder(gemma, dtype=mx.float32, quantize_bits=bits, eval_layers=1)
    assert_same(f"Gemma evaluated every layer, bits={bits}", chunked.hidden_states(input_ids, mask), resident)
    streamed = load_text_encoder(gemma, dtype=mx.float32, quantize_bits=bits, low_memory=True)
    assert isinstance(streamed.model.layers, StreamedBlocks) and len(streamed.model.layers) == 3
    assert_same(f"streamed Gemma, bits={bits}", streamed.hidden_states(input_ids, mask), resident)


def test_prompts_encoded_in_one_streamed_pass_equal_each_alone(model_files, monkeypatch):
    """encode_all runs each layer on every prompt before the next layer (a streamed Gemma is
    read once for a guided pipeline's two prompts); each result is bitwise its own encode."""
    gemma = model_files[1]
    prompts = ["a red fox runs through fresh snow", "blurry, low quality"]
    resident = load_text_encoder(gemma, dtype=mx.float32)
    alone = [resident.encode(prompt) for prompt in prompts]
    streamed = load_text_encoder(gemma, dtype=mx.float32, low_memory=True)
    passes = []
    open_pass = streamed.model.layers._open_pass
    monkeypatch.setattr(streamed.model.layers, "_open_pass", lambda: passes.append(1) or open_pass())
    together = streamed.encode_all(prompts)
    assert len(passes) == 1
    for prompt, (states, mask), (expected_states, expected_mask) in zip(prompts, together, alone):
        assert mx.array_equal(mask, expected_mask).item()
        assert_same(f"Gemma, '{prompt}' encoded with another in one streamed pass", states, expected_states)


def test_encoding_streams_gemma_unless_it_enhances_a_prompt(model_files, monkeypatch):
    from LTX_2_MLX.loader import text_encoder

    streamed = []
    load = text_encoder.load_text_encoder
    monkeypatch.setattr(
        text_encoder,
        "load_text_encoder",
        lambda *args, **kwargs: streamed.append(kwargs["low_memory"]) or load(*args, **kwargs),
    )
    text_encoder.encode_prompts(["a fox"], model_files[1], model_files[0], dtype=mx.float32)
    assert streamed == [True]  # one pass over the layers: nothing gained by holding them all
    assert text_encoder.streams_gemma(low_memory=False, enhance_prompt=True) is False  # a pass per generated token
    assert text_encoder.streams_gemma(low_memory=True, enhance_prompt=True) is True


def test_the_enhanced_prompt_is_reported_and_encoded(model_files, monkeypatch):
    """The rewritten prompt reaches the user (the ledger's report: stderr from the command line)
    as it is encoded, so that it can be passed as --prompt next time."""
    from LTX_2_MLX.model.text_encoder.encoder import GemmaTextEncoder

    monkeypatch.setattr(GemmaTextEncoder, "enhance_t2v", lambda self, prompt, seed=42: "A red fox runs at dawn.")
    messages = []
    ledger = ModelLedger(model_files[0], model_files[1], dtype=mx.float32, report=messages.append)
    (enhanced,) = ledger.encode_prompts(["a fox"], enhance_first_prompt=True)
    assert "enhanced prompt: A red fox runs at dawn." in messages
    (plain,) = ModelLedger(model_files[0], model_files[1], dtype=mx.float32).encode_prompts(["A red fox runs at dawn."])
    assert all(mx.array_equal(a, b).item() for a, b in zip(enhanced, plain) if a is not None)


def test_the_ledger_holds_gemma_whole_to_enhance_when_the_plan_says_so(model_files, monkeypatch):
    from LTX_2_MLX.loader import text_encoder
    from LTX_2_MLX.model.text_encoder.encoder import GemmaTextEncoder

    monkeypatch.setattr(GemmaTextEncoder, "enhance_t2v", lambda self, prompt, seed=42: "A red fox runs at dawn.")
    streamed = []
    load = text_encoder.load_text_encoder

    def recording(*args, **kwargs):
        streamed.append(kwargs["low_memory"])
        return load(*args, **kwargs)

    monkeypatch.setattr(text_encoder, "load_text_encoder", recording)
    for held in (None, False):
        ledger = ModelLedger(model_files[0], model_files[1], dtype=mx.float32, low_memory=True,
                             text_encoder_low_memory=held)  # fmt: skip
        ledger.encode_prompts(["a fox"], enhance_first_prompt=True)
    assert streamed == [True, False]


def test_ledger_low_memory_streams_the_dit_with_its_loras(model_files):
    checkpoint, lora = model_files[0], model_files[4]
    ledger = ModelLedger(checkpoint, dtype=mx.float32, loras=[(lora, 0.7)])
    streamed_ledger = ModelLedger(checkpoint, dtype=mx.float32, loras=[(lora, 0.7)], low_memory=True, eval_blocks=2)
    resident, streamed = ledger.transformer(), streamed_ledger.transformer()
    assert streams(streamed.velocity_model) and streamed.velocity_model.eval_blocks == 2
    config = tiny_transformer_config("2.3")
    video, audio = reference_modalities(config, batch=1)
    channels = ledger.config["transformer"]["in_channels"]
    video = replace(
        video, latent=torch.randn(1, video.latent.shape[1], channels, generator=torch.Generator().manual_seed(0))
    )
    assert_same("ledger low_memory DiT with LoRA", run_x0(streamed, video, audio), run_x0(resident, video, audio))
    with pytest.raises(ValueError, match="does not combine with --parallel"):
        ModelLedger(checkpoint, low_memory=True, parallel="tensor").transformer()


def run_x0(model, video, audio):
    outputs = model(to_mlx_modality(video), to_mlx_modality(audio))
    mx.eval(outputs)
    return outputs
