import mlx.core as mx
import pytest
import torch

from reference import PARITY_FIGURES

# The reference runs in float32 on the CPU; TF32-like shortcuts would blur the comparison.
torch.set_grad_enabled(False)
torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _mlx_on_cpu():
    mx.set_default_device(mx.cpu)
    yield


def pytest_terminal_summary(terminalreporter):
    if not PARITY_FIGURES:
        return
    terminalreporter.section("parity figures (MLX vs reference)")
    for name, measure, value in PARITY_FIGURES:
        shown = f"{value:.6f}" if measure == "cosine" else f"{value:.3e}"
        terminalreporter.write_line(f"{name:<70} {measure:<18} {shown}")
