"""The README's library example runs as written, on the tiny checkpoint: only the file paths
are swapped for the tiny model's."""

import re
from pathlib import Path

import numpy as np

README = Path(__file__).parent.parent / "README.md"


def library_example() -> str:
    section = README.read_text().split("## As a library\n", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_library_example_runs(model_files, capsys):
    checkpoint, gemma, _, upscaler = model_files[:4]
    code = library_example()
    paths = {
        "weights/ltx-2.3-22b-distilled.safetensors": str(checkpoint),
        "weights/gemma-3-12b-it": str(gemma),
        "weights/ltx-2.3-spatial-upscaler-x2-1.1.safetensors": str(upscaler),
    }
    for placeholder, path in paths.items():
        assert f'"{placeholder}"' in code, f"the README example no longer names {placeholder}"
        code = code.replace(f'"{placeholder}"', repr(path))
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)

    frames, (waveform, sample_rate) = namespace["frames"], namespace["video"].audio
    assert frames.shape == (25, 512, 768, 3) and frames.dtype == np.uint8
    assert waveform.ndim == 2 and waveform.shape[0] == 2 and sample_rate > 0
    printed = capsys.readouterr().out.splitlines()
    assert "stage 1: step 8/8" in printed and "stage 2: step 3/3" in printed
