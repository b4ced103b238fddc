"""One process of the multi-process tests (tests/test_distributed.py): runs the tiny guided
one-stage pipeline once per run given and, on rank 0 (or alone), saves the final latents (the
decoders' inputs), the frames and how many times the video decoder ran to OUT/<run>.npz.

A run is a --parallel mode ("none": alone), with "-tiled" for a tiled decode of a larger video
(64x128, 25 frames: 9 tiles of unequal sizes over three temporal chunks); without it the video is
64x64, 9 frames, decoded whole. Each rank prints one line per run: how many times its video
decoder ran and a digest of the frames it was given.

    mlx.launch -n 2 --backend ring -- python tests/distributed_worker.py CKPT GEMMA OUT guidance-tiled tensor
    python tests/distributed_worker.py CKPT GEMMA OUT none none-tiled
"""

import hashlib
import sys

import mlx.core as mx
import numpy as np

from LTX_2_MLX.components.guiders import MultiModalGuiderParams
from LTX_2_MLX.distributed import is_writer, parallel_group
from LTX_2_MLX.model.video_vae import SpatialTilingConfig, TemporalTilingConfig, TilingConfig, VideoDecoder
from LTX_2_MLX.pipelines.model_ledger import ModelLedger
from LTX_2_MLX.pipelines.ti2vid_one_stage import TI2VidOneStagePipeline

# CFG and STG on both streams: three passes a step (prompt, negative prompt, STG), an odd
# count over two processes; STG skips the self-attention of block 0 (video) and 1 (audio).
VIDEO_GUIDANCE = MultiModalGuiderParams(cfg_scale=3.0, stg_scale=1.0, stg_blocks=[0])
AUDIO_GUIDANCE = MultiModalGuiderParams(cfg_scale=7.0, stg_scale=1.0, stg_blocks=[1])
# Latents of 4 frames, 2 rows, 4 columns: tiles 2 latents wide (3 across) and 2 frames long,
# the later temporal ones reaching one frame back (3 chunks of 2, 3, 3 frames).
TILING = TilingConfig(SpatialTilingConfig(64, 32), TemporalTilingConfig(16, 8))
SIZES = {False: (64, 64, 9), True: (64, 128, 25)}

# Shapes of the latents the video decoder was called on in this process, tiles included.
DECODED: list[tuple[int, ...]] = []
_decoder_call = VideoDecoder.__call__


def _counted_decoder_call(self, latent, *args, **kwargs):
    DECODED.append(tuple(latent.shape))
    return _decoder_call(self, latent, *args, **kwargs)


VideoDecoder.__call__ = _counted_decoder_call


class _Recorder:
    """A decoder that remembers the latent it was given, whole or to decode in tiles."""

    def __init__(self, module, name: str, seen: dict):
        self.module, self.name, self.seen = module, name, seen

    def __call__(self, latent, *args, **kwargs):
        self.seen[self.name] = np.array(latent)
        return self.module(latent, *args, **kwargs)

    def tiled_decode(self, latent, *args, **kwargs):
        self.seen[self.name] = np.array(latent)
        return self.module.tiled_decode(latent, *args, **kwargs)


class RecordingLedger(ModelLedger):
    def __post_init__(self):
        super().__post_init__()
        self.seen = {}

    def video_decoder(self):
        return _Recorder(super().video_decoder(), "video_latent", self.seen)

    def audio_decoder_and_vocoder(self):
        decoder, vocoder = super().audio_decoder_and_vocoder()
        return _Recorder(decoder, "audio_latent", self.seen), vocoder


def run(checkpoint: str, gemma: str, mode: str | None, tiled: bool) -> dict:
    mx.set_default_device(mx.cpu)
    parallel_group(mode)  # joins the group (and quiets the progress bars of ranks but 0) up front
    DECODED.clear()
    height, width, num_frames = SIZES[tiled]
    ledger = RecordingLedger(checkpoint, gemma, dtype=mx.float32, parallel=mode)
    result = TI2VidOneStagePipeline(ledger, TILING if tiled else None)(
        prompt="a red fox runs", negative_prompt="blurry", seed=11, height=height, width=width,
        num_frames=num_frames, frame_rate=24.0, num_inference_steps=2, video_guider_params=VIDEO_GUIDANCE,
        audio_guider_params=AUDIO_GUIDANCE,
    )  # fmt: skip
    chunks = list(result.frames)  # every rank iterates them: each decodes its share of the tiles
    frames = np.concatenate(chunks) if chunks else np.zeros((0, height, width, 3), np.uint8)
    return {**ledger.seen, "frames": frames, "waveform": result.audio[0], "decoded": np.array(DECODED)}


def main() -> None:
    checkpoint, gemma, out, *runs = sys.argv[1:]
    for name in runs:
        mode, _, tiled = name.partition("-")
        mode = None if mode == "none" else mode
        outputs = run(checkpoint, gemma, mode, tiled == "tiled")
        if is_writer(parallel_group(mode)):
            np.savez(f"{out}/{name}.npz", **outputs)
        if mode is not None:
            digest = hashlib.sha256(outputs["frames"].tobytes()).hexdigest()[:16]
            print(f"rank {parallel_group(mode).rank()} ran {name}: {len(outputs['decoded'])} decoder calls, "
                  f"frames {digest}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
