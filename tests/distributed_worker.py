"""One process of the multi-process tests (tests/test_distributed.py): runs the tiny guided
one-stage pipeline once per --parallel mode given (or once without, alone) and, on rank 0 (or
alone), saves the final latents (the decoders' inputs) and the frames to OUT/<mode>.npz.

    mlx.launch -n 2 --backend ring -- python tests/distributed_worker.py CKPT GEMMA OUT guidance tensor
    python tests/distributed_worker.py CKPT GEMMA OUT none
"""

import sys

import mlx.core as mx
import numpy as np

from LTX_2_MLX.components.guiders import MultiModalGuiderParams
from LTX_2_MLX.distributed import is_writer, parallel_group
from LTX_2_MLX.pipelines.model_ledger import ModelLedger
from LTX_2_MLX.pipelines.ti2vid_one_stage import TI2VidOneStagePipeline

# CFG and STG on both streams: three passes a step (prompt, negative prompt, STG), an odd
# count over two processes; STG skips the self-attention of block 0 (video) and 1 (audio).
VIDEO_GUIDANCE = MultiModalGuiderParams(cfg_scale=3.0, stg_scale=1.0, stg_blocks=[0])
AUDIO_GUIDANCE = MultiModalGuiderParams(cfg_scale=7.0, stg_scale=1.0, stg_blocks=[1])


class _Recorder:
    """A decoder that remembers the latent it was given."""

    def __init__(self, module, name: str, seen: dict):
        self.module, self.name, self.seen = module, name, seen

    def __call__(self, latent, *args, **kwargs):
        self.seen[self.name] = np.array(latent)
        return self.module(latent, *args, **kwargs)


class RecordingLedger(ModelLedger):
    def __post_init__(self):
        super().__post_init__()
        self.seen = {}

    def video_decoder(self):
        return _Recorder(super().video_decoder(), "video_latent", self.seen)

    def audio_decoder_and_vocoder(self):
        decoder, vocoder = super().audio_decoder_and_vocoder()
        return _Recorder(decoder, "audio_latent", self.seen), vocoder


def run(checkpoint: str, gemma: str, mode: str | None) -> dict:
    mx.set_default_device(mx.cpu)
    ledger = RecordingLedger(checkpoint, gemma, dtype=mx.float32, parallel=mode)
    result = TI2VidOneStagePipeline(ledger)(
        prompt="a red fox runs", negative_prompt="blurry", seed=11, height=64, width=64, num_frames=9,
        frame_rate=24.0, num_inference_steps=2, video_guider_params=VIDEO_GUIDANCE,
        audio_guider_params=AUDIO_GUIDANCE,
    )  # fmt: skip
    frames = np.concatenate(list(result.frames))
    return {**ledger.seen, "frames": frames, "waveform": result.audio[0]}


def main() -> None:
    checkpoint, gemma, out, *modes = sys.argv[1:]
    for mode in modes:
        mode = None if mode == "none" else mode
        outputs = run(checkpoint, gemma, mode)
        if is_writer(parallel_group(mode)):
            np.savez(f"{out}/{mode or 'none'}.npz", **outputs)
        if mode is not None:
            print(f"rank {parallel_group(mode).rank()} ran --parallel {mode}", flush=True)


if __name__ == "__main__":
    main()
