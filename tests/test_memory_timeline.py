import sys
import time
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from memory_timeline import LINE_COLOUR, SIZE, MemorySampler, draw_runs, draw_timeline  # noqa: E402


def sampled_run() -> list[dict]:
    sampler = MemorySampler(interval=0.01)
    sampler.start()
    sampler.mark("allocate")
    kept = []
    for _ in range(3):
        kept.append(mx.ones((512, 512)))
        mx.eval(kept[-1])
        time.sleep(0.03)
    sampler.mark("compute")
    for array in kept:
        mx.eval(array @ array)
        time.sleep(0.03)
    sampler.stop()
    return sampler.samples


@pytest.fixture(scope="module")
def samples():
    return sampled_run()


def test_sampler_records_the_marked_phases_in_order(samples):
    assert len(samples) >= 6
    phases = [sample["phase"] for sample in samples]
    named = [phase for index, phase in enumerate(phases) if phase and (index == 0 or phases[index - 1] != phase)]
    assert named == ["allocate", "compute"]
    assert all(phases.count(phase) >= 2 for phase in named)
    times = [sample["t"] for sample in samples]
    assert times == sorted(times) and times[-1] > times[0]
    assert all(isinstance(sample["bytes"], int) for sample in samples)
    assert max(sample["bytes"] for sample in samples) >= 512 * 512 * 4


def test_draw_timeline_writes_a_png_with_the_line(samples, tmp_path):
    path = draw_timeline(samples, tmp_path / "memory.png", title="test run")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == SIZE
        pixels = np.asarray(image.convert("RGB"))
    assert (pixels == LINE_COLOUR).all(axis=-1).sum() > 50


def test_draw_timeline_single_sample(tmp_path):
    path = draw_timeline([{"t": 0.0, "bytes": 3 * 1024**3, "phase": "load"}], tmp_path / "one.png")
    with Image.open(path) as image:
        assert image.size == SIZE


def test_draw_timeline_refuses_no_samples(tmp_path):
    with pytest.raises(ValueError, match="no samples"):
        draw_timeline([], tmp_path / "empty.png")


def test_draw_runs_skips_runs_without_a_timeline(samples, tmp_path):
    runs = [
        {"pipeline": "distilled", "precision": "fp8", "mode": "default", "timeline": samples},
        {"pipeline": "distilled", "precision": "int8", "mode": "default", "error": ["failed"]},
        {"pipeline": "distilled", "precision": "fp8", "mode": "low-memory", "timeline": samples},
    ]
    paths = draw_runs(runs, tmp_path / "plots")
    assert [path.name for path in paths] == ["memory-distilled-fp8-default.png", "memory-distilled-fp8-low-memory.png"]
    assert all(path.is_file() for path in paths)
