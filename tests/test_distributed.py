"""Generation across processes: two processes on this machine (`mlx.launch -n 2 --backend ring`)
run the tiny guided one-stage pipeline with --parallel guidance (decoding in tiles, shared
between them) and --parallel tensor (decoding whole, on rank 0), and give what one process
alone gives (float32, CPU); only rank 0 shows progress. Launches that cannot work stop with
one line."""

import hashlib
import os
import re
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


# The runs of tests/distributed_worker.py: two processes each, and what one process gives.
PARALLEL_RUNS = {"guidance-tiled": "none-tiled", "tensor": "none"}
_RANK_LINE = re.compile(r"rank (\d) ran (\S+): (\d+) decoder calls, frames (\w+)")


@pytest.fixture(scope="module")
def runs(model_files, tmp_path_factory):
    """{run: outputs} for one process alone ("none", "none-tiled") and two processes per
    --parallel mode, with {run: {rank: (decoder calls, frames digest)}} under "ranks" and each
    rank's stderr under "stderr"."""
    checkpoint, gemma = str(model_files[0]), str(model_files[1])
    out, logs = tmp_path_factory.mktemp("distributed"), tmp_path_factory.mktemp("distributed_stderr")
    alone = subprocess.run([sys.executable, str(WORKER), checkpoint, gemma, str(out), *PARALLEL_RUNS.values()],
                           capture_output=True, text=True, env=_environment(), timeout=LAUNCH_TIMEOUT)  # fmt: skip
    assert alone.returncode == 0, alone.stderr[-3000:]
    worker = shlex.join([sys.executable, str(WORKER), checkpoint, gemma, str(out), *PARALLEL_RUNS])
    launched = _launch("bash", "-c", f"{worker} 2> {shlex.quote(str(logs))}/rank$MLX_RANK.txt")
    stderr = {rank: (logs / f"rank{rank}.txt").read_text() for rank in (0, 1)}
    assert launched.returncode == 0, launched.stdout[-2000:] + launched.stderr[-1000:] + stderr[0][-3000:]
    ranks = {}
    for rank, name, calls, digest in _RANK_LINE.findall(launched.stdout):
        ranks.setdefault(name, {})[int(rank)] = (int(calls), digest)
    assert {name: sorted(by_rank) for name, by_rank in ranks.items()} == {name: [0, 1] for name in PARALLEL_RUNS}
    # Rank 0 alone writes.
    names = [*PARALLEL_RUNS, *PARALLEL_RUNS.values()]
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{name}.npz" for name in names)
    outputs = {name: dict(np.load(out / f"{name}.npz")) for name in names}
    return {**outputs, "ranks": ranks, "stderr": stderr, "alone_stderr": alone.stderr}


@pytest.mark.parametrize("run", list(PARALLEL_RUNS))
def test_two_processes_give_the_latents_of_one(runs, run):
    for name in ("video_latent", "audio_latent", "waveform"):
        assert_matches(f"--parallel {run} (2 processes) {name}", runs[run][name], runs[PARALLEL_RUNS[run]][name])


def test_guidance_parallel_with_a_shared_decode_gives_the_same_frames(runs):
    # Each pass runs whole on one process: the predictions are the very same numbers; each tile
    # is decoded whole on one process and every process blends all of them in one process's order.
    parallel, alone = runs["guidance-tiled"], runs["none-tiled"]
    assert np.array_equal(parallel["video_latent"], alone["video_latent"])
    assert parallel["frames"].shape == (25, 64, 128, 3)
    assert np.array_equal(parallel["frames"], alone["frames"])
    # Rank 1 yields the same frames as rank 0.
    digest = hashlib.sha256(parallel["frames"].tobytes()).hexdigest()[:16]
    assert [runs["ranks"]["guidance-tiled"][rank][1] for rank in (0, 1)] == [digest, digest]


def test_the_tiles_of_the_decode_are_shared_round_robin(runs):
    # 3 tiles across x 3 temporal chunks of 2, 3, 3 latent frames; rank 0 takes tiles 0, 2, 4,
    # 6, 8 and rank 1 tiles 1, 3, 5, 7, so each round but the last holds tiles of two sizes.
    alone = [tuple(int(length) for length in shape[2:]) for shape in runs["none-tiled"]["decoded"]]
    assert alone == [(frames, 2, 2) for frames in (2, 3, 3) for _ in range(3)]  # (F, H, W) of the latent tiles
    calls = [runs["ranks"]["guidance-tiled"][rank][0] for rank in (0, 1)]
    assert calls == [5, 4]
    rank_0 = [tuple(int(length) for length in shape[2:]) for shape in runs["guidance-tiled"]["decoded"]]
    assert rank_0 == alone[0::2]


def test_tensor_parallel_gives_the_same_frames_decoded_whole_on_rank_0(runs):
    # Partial sums over two processes round differently in the last bits; a pixel may land
    # on the neighbouring 8-bit level, no further.
    difference = np.abs(runs["tensor"]["frames"].astype(int) - runs["none"]["frames"].astype(int))
    assert runs["tensor"]["frames"].shape == runs["none"]["frames"].shape == (9, 64, 64, 3)
    assert difference.max() <= 1 and np.mean(difference) < 1e-3
    # Untiled there is nothing to share: rank 0 decodes the whole latent, rank 1 nothing.
    assert [runs["ranks"]["tensor"][rank][0] for rank in (0, 1)] == [1, 0]


def test_only_rank_0_shows_progress(runs):
    # tqdm starts each bar with "denoising:   0%|" on stderr: one bar per run, two runs.
    assert runs["alone_stderr"].count("denoising:   0%|") == 2
    assert runs["stderr"][0].count("denoising:   0%|") == 2
    assert "denoising" not in runs["stderr"][1] and "%|" not in runs["stderr"][1], runs["stderr"][1]


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


def test_generate_under_mlx_launch_shares_the_decode_and_writes_once(model_files, tmp_path):
    # Rank 0 writes the frames as they decode while rank 1 decodes its tiles alongside (a rank
    # that did not iterate its frames would leave rank 0 waiting for ever).
    output = tmp_path / "fox.mp4"
    arguments = [sys.executable, "-m", "LTX_2_MLX.cli", *_generate_args(model_files, output), "--parallel", "guidance"]
    launched = _launch(*arguments)
    assert "exited with code" not in launched.stderr, launched.stderr[-3000:]
    assert launched.stdout.splitlines().count(f"wrote {output}") == 1, launched.stdout
    assert list(tmp_path.iterdir()) == [output] and output.stat().st_size > 0


def test_processes_that_would_cut_the_decode_differently_stop():
    # The memory plan picks decode tiles from each machine's memory: rank 1 plans untiled here.
    script = (
        "import mlx.core as mx\n"
        "from LTX_2_MLX.distributed import ParallelError, check_same_decode\n"
        "from LTX_2_MLX.model.video_vae import TilingConfig\n"
        "group = mx.distributed.init()\n"
        "try:\n"
        "    check_same_decode(group, (1, 128, 16, 16, 24), TilingConfig.default() if group.rank() == 0 else None)\n"
        "except ParallelError as error:\n"
        "    print(f'error: {error}', flush=True)\n"
    )
    launched = _launch(sys.executable, "-c", script)
    errors = [line for line in launched.stdout.splitlines() if line.startswith("error:")]
    assert len(errors) == 2 and all("would decode the video in different tiles" in line for line in errors), (
        launched.stdout + launched.stderr
    )
    assert all(line.endswith("give them all the same --memory-budget, or --no-tiled-decode") for line in errors)
    REFUSALS.append(("2 processes whose memory plans chose different decode tiles", errors[0]))
