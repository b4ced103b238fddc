import importlib.machinery
import importlib.util
import sys
import types

import mlx.core as mx
import pytest
import torch
from host_kernels import HostKernels, compiler_available
from reference import PARITY_FIGURES, REFUSALS


def _register_reference_import_placeholders() -> None:
    """`import ltx_pipelines` runs its package __init__, which imports every pipeline and with
    them the audio VAE (torchaudio) and media I/O (PyAV); ltx_core's audio VAE imports
    torchaudio too. Neither is installed (torchaudio would pull in a second torch). The code the
    tests compare calls neither, so placeholder modules stand in; any use of them raises, so a
    test cannot silently depend on one."""

    class Missing:
        def __init__(self, name):
            self._name = name

        def __getattr__(self, attr):
            if attr.startswith("__"):
                raise AttributeError(attr)
            return Missing(f"{self._name}.{attr}")

        def __call__(self, *args, **kwargs):
            raise RuntimeError(f"{self._name} belongs to a placeholder module registered by the tests")

    for name in ("torchaudio", "av"):
        if name in sys.modules or importlib.util.find_spec(name) is not None:
            continue
        module = types.ModuleType(name)
        module.__spec__ = importlib.machinery.ModuleSpec(name, None)

        def module_getattr(attr, name=name):
            if attr.startswith("__"):
                raise AttributeError(attr)
            return Missing(f"{name}.{attr}")

        module.__getattr__ = module_getattr
        sys.modules[name] = module


_register_reference_import_placeholders()


# The reference runs in float32 on the CPU; TF32-like shortcuts would blur the comparison.
torch.set_grad_enabled(False)
torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _small_read_buffers(monkeypatch):
    """Reads staged as on CUDA (loader.staging) use 1 MiB buffers here, not two of 256 MiB that
    would stay allocated and lift later tests' peak memory."""
    from LTX_2_MLX.loader import staging

    monkeypatch.setattr(staging, "_BUFFER_BYTES", 2**20)


@pytest.fixture(autouse=True)
def _mlx_on_cpu():
    mx.set_default_device(mx.cpu)
    yield


def pytest_terminal_summary(terminalreporter):
    if REFUSALS:
        terminalreporter.section("bad input refused (what the user sees)")
        for test, message in REFUSALS:
            terminalreporter.write_line(f"{test}\n    {message}")
    if not PARITY_FIGURES:
        return
    terminalreporter.section("parity figures (MLX vs reference)")
    for name, measure, value in PARITY_FIGURES:
        shown = f"{value:.6f}" if measure == "cosine" else f"{value:.3e}"
        terminalreporter.write_line(f"{name:<70} {measure:<18} {shown}")


@pytest.fixture(scope="session")
def model_files(tmp_path_factory):
    """(checkpoint, gemma dir, image, upscaler, LoRA, folder): tiny, complete, official layout."""
    from generate_fixtures import build_model_files

    return build_model_files(tmp_path_factory)


@pytest.fixture(scope="session")
def clip(tmp_path_factory):
    """A 17-frame 64x64 clip at 24 fps with a stereo 16 kHz tone (AAC), for retake and extend."""
    import numpy as np

    from LTX_2_MLX.pipelines.media_io import write_video

    frames, fps, size = 17, 24.0, 64
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    pixels = np.random.RandomState(2).randint(0, 255, (frames, size, size, 3), np.uint8)
    t = np.arange(int(16000 * frames / fps)) / 16000
    waveform = np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 660 * t)]).astype(np.float32) * 0.5
    write_video(path, [pixels], fps, (waveform, 16000))
    return str(path)


@pytest.fixture
def sixteen_mel_bins(monkeypatch):
    """Our audio encoder made with the 16 mel bins the tiny encoder was built for (the tiny
    checkpoint's config says 64, for the vocoder)."""
    from test_audio_vae import MEL_BINS

    from LTX_2_MLX.pipelines import retake

    load = retake.load_audio_encoder

    def load_with_its_mel_bins(ledger):
        encoder = load(ledger)
        encoder.mel_bins = MEL_BINS
        return encoder

    monkeypatch.setattr(retake, "load_audio_encoder", load_with_its_mel_bins)


@pytest.fixture
def host_kernels(monkeypatch, tmp_path):
    """Our CUDA kernels built for the CPU (host_kernels.py) stand in for the GPU ones: the model
    takes its CUDA path here. Skipped where there is no C++ compiler."""
    if not compiler_available():
        pytest.skip("needs a C++ compiler (c++) to run the kernel here")
    from LTX_2_MLX.model.common import cuda_kernels

    kernels = HostKernels(tmp_path / "kernels")
    monkeypatch.setattr(cuda_kernels, "enabled", lambda: True)
    monkeypatch.setattr(cuda_kernels, "kernel", kernels.kernel)
    return kernels
