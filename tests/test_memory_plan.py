"""The memory planner (pipelines/memory_plan.py): its estimates against peaks measured on the
CPU with the tiny models, the choices it makes for a budget, and the CLI's --memory-budget /
--low-memory / --dry-run, all before any model loads."""

import json
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from click.testing import CliRunner
from reference import REFUSALS

from LTX_2_MLX.cli import main
from LTX_2_MLX.pipelines.memory_plan import PlanInputs, estimate_phases, plan_generation
from LTX_2_MLX.pipelines.registry import PIPELINES

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "end_to_end.py"
# The estimate over the measured peak, per phase, on the CPU at 128x128x17 with the tiny models.
# Not yet the 20% target (that is for full size on the GPU): at this size fixed overheads the
# formulas leave out (the CPU's unfused attention scores, allocator rounding) dominate.
TINY_RATIO_RANGE = (0.15, 1.5)


@pytest.fixture
def no_weights_read(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the input was checked")

    monkeypatch.setattr(mx, "load", refuse)


def _inputs(model_files, **changes) -> PlanInputs:
    checkpoint, gemma, _, upscaler, _, _ = model_files
    values = dict(checkpoint=checkpoint, pipeline=PIPELINES["distilled"], height=128, width=128, num_frames=17,
                  dtype=mx.float32, gemma_path=gemma, spatial_upscaler_path=upscaler)  # fmt: skip
    return PlanInputs(**{**values, **changes})


def _args(model_files, tmp_path, *extra) -> list[str]:
    checkpoint, gemma, _, upscaler, _, _ = model_files
    return ["generate", "--checkpoint-path", checkpoint, "--gemma-path", str(gemma), "--pipeline", "distilled",
            "--spatial-upscaler-path", upscaler, "--prompt", "a red fox", "--height", "128", "--width", "128",
            "--num-frames", "17", "--dtype", "float32", "--output-path", str(tmp_path / "out.mp4"), *extra]  # fmt: skip


def test_tiny_plan_against_measured_peaks_per_phase(model_files, tmp_path):
    checkpoint, gemma, _, upscaler, _, _ = model_files
    out = tmp_path / "e2e.json"
    done = subprocess.run(
        [sys.executable, str(BENCHMARK), "--tiny", "--checkpoint-path", checkpoint, "--gemma-path", str(gemma),
         "--spatial-upscaler-path", upscaler, "--precisions", "bf16", "--modes", "default", "--json", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    (run,) = json.loads(out.read_text())["runs"]
    measured = {phase["phase"]: phase for phase in run["phases"]}
    expected = {"Gemma encode", "prompt processor", "DiT stage 1", "upscaler", "DiT stage 2", "audio decode",
                "VAE decode"}  # fmt: skip
    assert set(measured) == expected
    for name, phase in measured.items():
        low, high = TINY_RATIO_RANGE
        assert low <= phase["estimate_ratio"] <= high, (name, phase)


def test_end_to_end_runs_the_reference_on_the_tiny_files(model_files, tmp_path):
    checkpoint, gemma, _, upscaler, _, _ = model_files
    out = tmp_path / "e2e.json"
    done = subprocess.run(
        [sys.executable, str(BENCHMARK), "--tiny", "--reference", "--checkpoint-path", checkpoint, "--gemma-path",
         str(gemma), "--spatial-upscaler-path", upscaler, "--precisions", "bf16", "--modes", "default", "--json",
         str(out)], capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    runs = json.loads(out.read_text())["runs"]
    assert [run["side"] for run in runs] == ["mlx", "ltx-pipelines"] and not any("error" in run for run in runs)
    phases = {"Gemma encode", "prompt processor", "DiT stage 1", "upscaler", "DiT stage 2", "audio decode",
              "VAE decode"}  # fmt: skip
    assert all({phase["phase"] for phase in run["phases"]} == phases for run in runs)
    assert runs[1]["frames"] == 17


def test_end_to_end_compares_the_medians_of_the_timed_runs(capsys):
    # `end_to_end.py --warmup W --repeats N`: warm-up runs are left out, medians are compared.
    sys.path.insert(0, str(BENCHMARK.parent))
    from end_to_end import print_side_by_side

    def run(side: str, seconds: float, gemma: float, warmup: bool = False) -> dict:
        phases = [{"phase": "Gemma encode", "seconds": gemma, "peak_bytes": 2**30},
                  {"phase": "DiT", "seconds": seconds - gemma, "peak_bytes": 2**31}]  # fmt: skip
        return {"side": side, "pipeline": "distilled", "precision": "bf16", "mode": "default", "seconds": seconds,
                "phases": phases, "warmup": warmup}  # fmt: skip

    runs = [run("mlx", 90.0, 50.0, warmup=True), run("ltx-pipelines", 40.0, 8.0, warmup=True),
            run("mlx", 21.0, 5.0), run("ltx-pipelines", 20.0, 8.0), run("mlx", 23.0, 7.0),
            run("ltx-pipelines", 19.0, 7.0), run("mlx", 22.0, 6.0), run("ltx-pipelines", 21.0, 9.0)]  # fmt: skip
    print_side_by_side(runs)
    printed = capsys.readouterr().out
    assert "medians of 3 and 3 runs (total 22.0 s vs 20.0 s, MLX / ltx-pipelines 1.10)" in printed
    assert "Gemma encode          6.00     8.00" in printed


def _eight_block_checkpoint(model_files, folder: Path) -> str:
    """A header-only stand-in: the tiny model's config with a DiT of eight 1 MiB blocks."""
    from LTX_2_MLX.loader.checkpoint import Checkpoint

    config = Checkpoint.open(model_files[0]).config()
    config.pop("audio_vae"), config.pop("vocoder")
    blocks = {f"model.diffusion_model.transformer_blocks.{i}.attn1.to_q.weight": mx.zeros((512, 512)) for i in range(8)}
    path = str(folder / "eight-blocks.safetensors")
    mx.save_safetensors(path, blocks, metadata={"config": json.dumps(config)})
    return path


def test_planner_streams_the_dit_when_only_that_fits(model_files, tmp_path):
    inputs = _inputs(model_files, checkpoint=_eight_block_checkpoint(model_files, tmp_path), gemma_path=None,
                     spatial_upscaler_path=None, height=64, width=64)  # fmt: skip
    resident = max(p.peak for p in estimate_phases(inputs, False, (256, 32)))
    streamed = max(p.peak for p in estimate_phases(inputs, True, (256, 32)))
    assert streamed < resident
    plan = plan_generation(inputs, budget=(resident + streamed) // 2)
    assert plan.fits and plan.low_memory
    assert "2 of 8 blocks" in plan.phase("DiT stage 1").detail
    assert not plan_generation(inputs, budget=resident * 2).low_memory


def test_planner_shrinks_decode_tiles_before_refusing(model_files):
    inputs = _inputs(model_files, gemma_path=None, height=512, width=512)
    largest = max(p.peak for p in estimate_phases(inputs, True, (512, 64)))
    smallest = max(p.peak for p in estimate_phases(inputs, True, (256, 32)))
    assert smallest < largest
    plan = plan_generation(inputs, budget=smallest)
    assert plan.fits and plan.tile_size == (256, 32)


def test_refusal_names_what_would_fit_and_loads_nothing(model_files, tmp_path, no_weights_read, monkeypatch):
    # As on a GPU (fused attention, no scores held): on the CPU the tiny prompt processor's
    # 1024 x 1024 connector scores would be the largest phase at every size, so nothing smaller fits.
    from LTX_2_MLX.pipelines import memory_plan

    monkeypatch.setattr(memory_plan, "_K_SCORES", 0.0)
    inputs = _inputs(model_files, dtype=mx.bfloat16)
    streamed = max(p.peak for p in estimate_phases(inputs, True, (256, 32)))
    budget_gib = f"{streamed * 0.999 / 2**30:.9f}"
    result = CliRunner().invoke(main, _args(model_files, tmp_path, "--dtype", "bfloat16", "--memory-budget",
                                            budget_gib, "--low-memory"))  # fmt: skip
    assert result.exit_code != 0
    message = result.output.strip().splitlines()[-1]
    REFUSALS.append(("memory plan refusal", message))
    assert "what would fit:" in message and "--height 64 --width 64" in message, message
    assert not (tmp_path / "out.mp4").exists()


def test_dry_run_prints_the_plan_and_writes_nothing(model_files, tmp_path, no_weights_read):
    result = CliRunner().invoke(main, _args(model_files, tmp_path, "--dry-run", "--memory-budget", "1e-6"))
    assert result.exit_code == 0, result.output
    for phase in ("Gemma encode", "DiT stage 1", "upscaler", "DiT stage 2", "VAE decode", "largest:"):
        assert phase in result.output
    assert "does NOT fit" in result.output
    assert list(tmp_path.iterdir()) == []


def test_streamed_gemma_holds_two_layers(model_files):
    """With --low-memory, Gemma's plan counts what stays resident: the weights outside its
    layers and the two layers in flight (on the H200 the resident estimate was 7x the
    streamed run's peak)."""
    import re

    from LTX_2_MLX.loader.checkpoint import Checkpoint
    from LTX_2_MLX.pipelines.memory_plan import gemma_weight_bytes

    gemma = model_files[1]
    layers, outside = {}, 0
    for shard in sorted(gemma.glob("*.safetensors")):
        for name, entry in Checkpoint.open(shard).entries.items():
            if "vision_tower." in name or "multi_modal_projector." in name:
                continue
            size = int(np.prod(entry.shape)) * 4
            layer = re.search(r"\.layers\.(\d+)\.", name)
            if layer:
                layers[layer.group(1)] = layers.get(layer.group(1), 0) + size
            else:
                outside += size
    assert len(layers) > 2
    resident, _ = gemma_weight_bytes(gemma, mx.float32, None)
    streamed, _ = gemma_weight_bytes(gemma, mx.float32, None, streamed=True)
    assert resident == outside + sum(layers.values())
    assert streamed == outside + sum(sorted(layers.values())[-2:])


def test_gemma_is_planned_streamed_unless_it_enhances_the_prompt(model_files):
    from LTX_2_MLX.pipelines.memory_plan import gemma_weight_bytes

    streamed, _ = gemma_weight_bytes(model_files[1], mx.float32, None, streamed=True)
    resident, _ = gemma_weight_bytes(model_files[1], mx.float32, None)
    budget = 2**40
    assert plan_generation(_inputs(model_files), budget).phase("Gemma encode").weights == streamed
    enhancing = plan_generation(_inputs(model_files, enhance_prompt=True), budget)
    assert enhancing.phase("Gemma encode").weights == resident
    assert plan_generation(_inputs(model_files, enhance_prompt=True), budget, low_memory=True).phase(
        "Gemma encode").weights == streamed  # fmt: skip


def test_a_chosen_stream_keeps_gemma_whole_to_enhance_where_it_fits(model_files):
    """Streaming the DiT because only that fits leaves Gemma whole while it writes the enhanced
    prompt (a pass over its layers per token) when Gemma alone fits; otherwise it streams too."""
    from LTX_2_MLX.pipelines.memory_plan import TILE_SIZES, estimate_phases, gemma_weight_bytes

    # Large enough for the DiT's activations to outweigh the tiny Gemma.
    inputs = _inputs(model_files, enhance_prompt=True, height=512, width=512, num_frames=121)
    resident_gemma, _ = gemma_weight_bytes(model_files[1], mx.float32, None)

    def peak(streamed: bool, gemma_streamed: bool | None) -> int:
        return max(p.peak for p in estimate_phases(inputs, streamed, TILE_SIZES[-1], gemma_streamed))

    dit_resident, gemma_whole, both_streamed = peak(False, None), peak(True, False), peak(True, None)
    assert both_streamed <= gemma_whole < dit_resident
    plan = plan_generation(inputs, gemma_whole)
    assert plan.fits and plan.low_memory and plan.gemma_low_memory is False and not plan.text_encoder_low_memory
    assert plan.phase("Gemma encode").weights == resident_gemma
    tight = plan_generation(inputs, gemma_whole - 1)
    assert tight.low_memory and tight.text_encoder_low_memory
    asked = plan_generation(inputs, gemma_whole, low_memory=True)  # --low-memory streams both
    assert asked.text_encoder_low_memory and asked.phase("Gemma encode").weights < resident_gemma


def test_streamed_plan_keeps_the_decode_below_the_rest_and_limits_mlx_to_its_peak(model_files):
    from LTX_2_MLX.loader.checkpoint import Checkpoint
    from LTX_2_MLX.pipelines.memory_plan import LIMIT_MARGIN, TILE_SIZES, vae_decode_phase

    inputs = _inputs(model_files, gemma_path=None, height=512, width=512)
    budget = 2**40
    resident = plan_generation(inputs, budget, low_memory=False)
    assert resident.tile_size == (512, 64) and resident.memory_limit == int(budget * (1 - LIMIT_MARGIN))
    streamed = plan_generation(inputs, budget, low_memory=True)
    others = max(phase.peak for phase in streamed.phases if phase.name != "VAE decode")
    decode = {tile: vae_decode_phase(inputs, Checkpoint.open(inputs.checkpoint), tile).peak for tile in TILE_SIZES}
    assert decode[(512, 64)] > others  # the largest tiles would make the decode the run's peak
    assert streamed.tile_size == next((tile for tile in TILE_SIZES if decode[tile] <= others), TILE_SIZES[-1])
    assert streamed.memory_limit == int(int(streamed.peak.peak * 1.25) * (1 - LIMIT_MARGIN)) < budget
    tight = plan_generation(inputs, streamed.peak.peak, low_memory=True)
    assert tight.memory_limit == int(streamed.peak.peak * (1 - LIMIT_MARGIN))


@pytest.mark.parametrize(
    "info, expected",
    [({"max_recommended_working_set_size": 22 * 2**30, "memory_size": 32 * 2**30}, 22 * 2**30),
     ({"total_memory": 80 * 10**9, "free_memory": 70 * 10**9}, int(80 * 10**9 * 0.95)),
     ({"architecture": "x86_64"}, None)],
    ids=["metal", "cuda", "cpu"],
)  # fmt: skip
def test_default_budget_is_what_mlx_may_use_on_the_device(monkeypatch, info, expected):
    import os

    from LTX_2_MLX.cli.generate import memory_budget_bytes

    monkeypatch.setattr(mx, "device_info", lambda: info)
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert memory_budget_bytes() == (expected if expected is not None else physical)


def test_streamed_guided_steps_plan_every_pass_at_once(model_files):
    """Streamed, a guided step's passes run through the blocks together (one read per step):
    their activations are live at once. Resident, they run one after the other."""
    inputs = _inputs(model_files, pipeline=PIPELINES["one-stage"], height=64, width=64)
    resident = {p.name: p for p in estimate_phases(inputs, False, None)}["DiT"]
    streamed = {p.name: p for p in estimate_phases(inputs, True, None)}["DiT"]
    assert streamed.activations == 4 * resident.activations and "x 4 passes" in streamed.detail
    unguided = {p.name: p for p in estimate_phases(_inputs(model_files), True, None)}
    assert "passes" not in unguided["DiT stage 1"].detail and "passes" not in unguided["DiT stage 2"].detail


def _load_peak(load) -> int:
    mx.synchronize()
    mx.clear_cache()
    base = mx.get_active_memory()
    mx.reset_peak_memory()
    model = load()
    del model
    mx.clear_cache()
    return mx.get_peak_memory() - base


def test_quantized_gemma_plans_its_embedding_held_twice_while_loading(model_files):
    """Loading Gemma quantized holds the embedding in float beside its quantized copy: on the
    H200 that was the phase's peak (2.87 GiB at 8 bits, 1.97 GiB estimated without it)."""
    from LTX_2_MLX.loader.text_encoder import load_text_encoder
    from LTX_2_MLX.pipelines.memory_plan import gemma_load_peak

    gemma = model_files[1]
    assert gemma_load_peak(gemma, mx.float32, None) == 0
    for bits in (8, 4):
        estimate = gemma_load_peak(gemma, mx.float32, bits)
        measured = _load_peak(lambda: load_text_encoder(gemma, dtype=mx.float32, quantize_bits=bits, low_memory=True))
        assert 0.8 <= estimate / measured <= 1.25, (bits, estimate, measured)


def test_quantizing_dit_plans_one_block_as_read_beside_its_quantized_copy(model_files):
    from LTX_2_MLX.loader.checkpoint import Checkpoint
    from LTX_2_MLX.pipelines.memory_plan import block_conversion_bytes, dit_weight_bytes
    from LTX_2_MLX.quantization import load_prepared_transformer

    checkpoint = Checkpoint.open(model_files[0])
    assert block_conversion_bytes(checkpoint, mx.float32, None) == 0
    for mode in ("fp8", "int8"):
        other, blocks = dit_weight_bytes(checkpoint, mx.float32, mode)
        converting = block_conversion_bytes(checkpoint, mx.float32, mode)
        assert converting > 0
        estimate = other + sum(blocks) + converting
        measured = _load_peak(lambda: load_prepared_transformer(checkpoint, mx.float32, (), mode))
        assert 0.8 <= estimate / measured <= 1.25, (mode, estimate, measured)


def test_decode_chunks_overlap_in_proportion_to_their_length(model_files):
    """The largest tiles are the reference default (64 frames, 24 shared); smaller chunks share
    as large a share, so no frame is decoded in more than two chunks."""
    from dataclasses import replace

    from LTX_2_MLX.model.video_vae.tiling import prepare_tiles_for_decoding
    from LTX_2_MLX.pipelines.memory_plan import TILE_SIZES

    plan = plan_generation(_inputs(model_files), 2**40)
    latent = (1, 128, 16, 16, 24)  # 768x512x121
    for tile in TILE_SIZES:
        config = replace(plan, tile_size=tile).tiling_config()
        frames, overlap = config.temporal_config.tile_size_in_frames, config.temporal_config.tile_overlap_in_frames
        assert overlap % 8 == 0 and 2 * overlap <= frames, (tile, overlap)
        chunks = {t.out_coords[2].start for t in prepare_tiles_for_decoding(latent, config, (8, 32, 32))}
        assert len(chunks) <= -(-121 // (frames - overlap)) + 1, (tile, sorted(chunks))
    assert replace(plan, tile_size=(512, 64)).tiling_config().temporal_config.tile_overlap_in_frames == 24


def test_on_cuda_the_read_buffers_count_in_every_phase(model_files, monkeypatch):
    import LTX_2_MLX.loader.checkpoint as checkpoint_module
    from LTX_2_MLX.loader import staging

    monkeypatch.setattr(staging, "_BUFFER_BYTES", 2**28)  # the real size (only counted here)
    elsewhere = estimate_phases(_inputs(model_files), False, None)
    monkeypatch.setattr(checkpoint_module, "_HOST_READ", True)
    on_cuda = estimate_phases(_inputs(model_files), False, None)
    held = 2 * staging._BUFFER_BYTES
    for before, after in zip(elsewhere, on_cuda, strict=True):
        assert before.buffers == 0 and after.buffers == held and after.peak == before.peak + held, after.name
    plan = plan_generation(_inputs(model_files), 2**40)
    assert "512.0 MiB read buffers" in plan.table()


def test_full_size_estimates_within_a_fifth_of_the_h200_runs(tmp_path):
    """The planner, from header-only stand-ins of the full-size files, against the peaks the
    H200 measured per phase (benchmarks/results/): every run of the later session, and the
    earlier one's goal runs (before the convolution weights were stored contiguous)."""
    sys.path.insert(0, str(BENCHMARK.parent))
    from plan_accuracy import compare

    results = BENCHMARK.parent / "results"
    earlier, later = results / "h200-2026-11-29", results / "h200-2026-11-29b"
    fp8_runs = [earlier / "fp8file_bf16_default_b2235.json", earlier / "fp8file_int8_low.json",
                earlier / "fp8file_int4_low.json", *sorted(later.glob("fp8file_*.json"))]  # fmt: skip
    runs = compare(fp8_runs, "fp8", tmp_path)
    runs += compare([earlier / "bf16file_bf16_low.json", *sorted(later.glob("bf16file_*.json"))], "bf16", tmp_path)
    assert len(runs) == 10
    for run in runs:
        for phase in run["phases"]:
            assert 0.8 <= phase["estimate"] / phase["measured"] <= 1.2, (run["file"], run["precision"], phase)
