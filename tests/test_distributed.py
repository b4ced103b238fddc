"""Generation across processes: two processes on this machine (`mlx.launch -n 2 --backend ring`)
run the tiny guided one-stage pipeline with --parallel guidance and --parallel tensor, and give
what one process alone gives (float32, CPU). Launches that cannot work stop with one line."""

import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from reference import REFUSALS, assert_matches

from LTX_2_MLX.cli import main
from LTX_2_MLX.distributed import ParallelError, check_parallel_mode
from LTX_2_MLX.model.transformer import LTXModelConfig

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("distributed_worker.py")
# A hang must fail the test, not the suite.
LAUNCH_TIMEOUT = 300


def _environment() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def _launch(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["mlx.launch", "-n", "2", "--backend", "ring", "--", *command],
        capture_output=True, text=True, env=_environment(), cwd=ROOT, timeout=LAUNCH_TIMEOUT,
    )  # fmt: skip


@pytest.fixture(scope="module")
def runs(model_files, tmp_path_factory):
    """{mode: outputs} for one process alone ("none") and two processes per --parallel mode."""
    checkpoint, gemma = str(model_files[0]), str(model_files[1])
    out = tmp_path_factory.mktemp("distributed")
    alone = subprocess.run([sys.executable, str(WORKER), checkpoint, gemma, str(out), "none"],
                           capture_output=True, text=True, env=_environment(), timeout=LAUNCH_TIMEOUT)  # fmt: skip
    assert alone.returncode == 0, alone.stderr[-3000:]
    launched = _launch(sys.executable, str(WORKER), checkpoint, gemma, str(out), "guidance", "tensor")
    assert launched.returncode == 0, launched.stdout[-2000:] + launched.stderr[-3000:]
    for mode in ("guidance", "tensor"):
        assert {f"rank {rank} ran --parallel {mode}" for rank in (0, 1)} <= set(launched.stdout.splitlines())
    # Rank 0 alone writes.
    assert sorted(p.name for p in out.iterdir()) == ["guidance.npz", "none.npz", "tensor.npz"]
    return {mode: dict(np.load(out / f"{mode}.npz")) for mode in ("none", "guidance", "tensor")}


@pytest.mark.parametrize("mode", ["guidance", "tensor"])
def test_two_processes_give_the_latents_of_one(runs, mode):
    for name in ("video_latent", "audio_latent", "waveform"):
        assert_matches(f"--parallel {mode} (2 processes) {name}", runs[mode][name], runs["none"][name])


def test_guidance_parallel_gives_the_same_frames(runs):
    # Each pass runs whole on one process: the predictions are the very same numbers.
    assert np.array_equal(runs["guidance"]["frames"], runs["none"]["frames"])
    assert np.array_equal(runs["guidance"]["video_latent"], runs["none"]["video_latent"])


def test_tensor_parallel_gives_the_same_frames(runs):
    # Partial sums over two processes round differently in the last bits; a pixel may land
    # on the neighbouring 8-bit level, no further.
    difference = np.abs(runs["tensor"]["frames"].astype(int) - runs["none"]["frames"].astype(int))
    assert runs["tensor"]["frames"].shape == runs["none"]["frames"].shape == (9, 64, 64, 3)
    assert difference.max() <= 1 and np.mean(difference) < 1e-3


def _generate_args(model_files, output, *extra) -> list[str]:
    checkpoint, gemma = model_files[:2]
    return ["generate", "--checkpoint-path", str(checkpoint), "--gemma-path", str(gemma), "--prompt", "a red fox",
            "--output-path", str(output), "--height", "64", "--width", "64", "--num-frames", "9",
            "--num-inference-steps", "2", "--dtype", "float32", *extra]  # fmt: skip


def test_parallel_in_a_lone_process_is_refused(model_files, tmp_path):
    output = tmp_path / "fox.mp4"
    result = CliRunner().invoke(main, _generate_args(model_files, output, "--parallel", "guidance"))
    assert result.exit_code == 1
    assert result.output.startswith("error: --parallel guidance needs several processes but this one is alone: "
                                    "start it with `mlx.launch -n 2 -- ltx2-mlx generate ...`")  # fmt: skip
    assert len(result.output.strip().splitlines()) == 1
    REFUSALS.append(("generate --parallel guidance without mlx.launch", result.output.strip()))
    assert list(tmp_path.iterdir()) == []


def test_parallel_modes_that_cannot_use_the_processes_are_refused():
    config = LTXModelConfig(num_attention_heads=32, audio_num_attention_heads=32)
    with pytest.raises(ParallelError, match="--pipeline distilled is unguided"):
        check_parallel_mode("guidance", guided=False, config=config, pipeline="distilled", size=2)
    with pytest.raises(ParallelError, match="the video stream has 32 heads for 3 processes"):
        check_parallel_mode("tensor", guided=True, config=config, pipeline="one-stage", size=3)
    check_parallel_mode("tensor", guided=False, config=config, pipeline="distilled", size=4)
    check_parallel_mode("guidance", guided=True, config=config, pipeline="one-stage", size=3)


def test_processes_given_different_arguments_stop_with_one_line(model_files, tmp_path):
    output = tmp_path / "fox.mp4"
    # Each rank is given its own seed: the run must stop on both before any model loads.
    arguments = [sys.executable, "-m", "LTX_2_MLX.cli", *_generate_args(model_files, output), "--parallel", "guidance"]
    launched = _launch("bash", "-c", shlex.join(arguments) + " --seed $MLX_RANK")
    errors = [line for line in launched.stderr.splitlines() if line.startswith("error:")]
    # mlx.launch itself exits 0 and reports each rank's exit status; once one rank has exited it
    # terminates the others, so the slower one may end with -15 after printing its line.
    assert "exited with code 1" in launched.stderr and "exited with code 0" not in launched.stderr, launched.stderr
    assert len(errors) == 2 and all("were not given the same arguments" in line for line in errors), launched.stderr
    REFUSALS.append(("mlx.launch -n 2 -- ltx2-mlx generate ... --seed <differs per rank>", errors[0]))
    assert list(tmp_path.iterdir()) == []
