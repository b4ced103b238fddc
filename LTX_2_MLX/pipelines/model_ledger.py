"""Where a pipeline gets its models: each loaded on demand from the checkpoint (or the Gemma
directory) and dropped by the caller when its step is done, so the 12B text encoder, the VAE
and the DiT are never resident together."""

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import mlx.core as mx

from LTX_2_MLX.loader.checkpoint import Checkpoint, CheckpointError, while_reading


@dataclass
class ModelLedger:
    checkpoint_path: str | Path | Checkpoint
    gemma_path: str | Path | None = None
    dtype: mx.Dtype = mx.bfloat16
    spatial_upscaler_path: str | Path | None = None
    loras: list[tuple[str, float]] = field(default_factory=list)
    text_encoder_bits: int | None = None
    quantization: str | None = None  # "fp8", "int8" or "int4" for the DiT
    # "guidance" or "tensor": the DiT shared with the other processes mlx.launch started.
    parallel: str | None = None
    # Prompt-embedding files standing in for the pipeline's prompts by position
    # (0: the prompt, 1: the negative prompt); None or missing entries are encoded with Gemma.
    precomputed_embeddings: tuple[str | Path | None, ...] = ()
    # Stream the DiT's blocks and Gemma's layers from their files as each forward reaches them
    # (loader.streaming): about two blocks resident instead of all; outputs unchanged.
    low_memory: bool = False
    # Gemma's layers while it enhances a prompt: streamed as low_memory says when None; False
    # holds Gemma whole for the enhancement though the DiT streams (MemoryPlan.gemma_low_memory).
    text_encoder_low_memory: bool | None = None
    # DiT blocks / Gemma layers per evaluation (one bounded piece of GPU work each, for macOS's
    # watchdog); None: the models' defaults (DiT 1; Gemma the whole forward, 1 when streamed).
    eval_blocks: int | None = None
    # Told what is about to load and its size (the CLI prints it); silent by default.
    report: Callable[[str], None] = field(default=lambda message: None, repr=False)
    # Work for the next DiT load's waits on the disk (prepare_while_loading); not copied by replace().
    _while_loading: list[Callable[[], None]] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self):
        if self.eval_blocks is not None and self.eval_blocks < 1:
            raise ValueError(f"eval_blocks={self.eval_blocks} must be at least 1 (blocks per evaluation), e.g. 1")
        # Opened once: every model below is read through this one header.
        self.checkpoint = Checkpoint.open(self.checkpoint_path)
        self.config = self.checkpoint.config("transformer", what="LTX-2 transformer")

    @property
    def has_audio(self) -> bool:
        return "audio_vae" in self.config and "vocoder" in self.config

    @property
    def audio_latent_channels(self) -> int:
        """The audio VAE's latent channels (8 in LTX-2); audio tokens are these x mel bins."""
        try:
            return int(self.config["audio_vae"]["model"]["params"]["ddconfig"]["z_channels"])
        except (KeyError, TypeError):
            return 8

    def _announce(self, what: str, source: Checkpoint | str | Path, prefix: str = "") -> None:
        """`source`: a checkpoint (the tensors under `prefix` are counted) or a directory of
        safetensors shards (all counted)."""
        if isinstance(source, Checkpoint) or Path(source).is_file():
            source = Checkpoint.open(source)
            name, size = source.path.name, source.stored_bytes(prefix)
        else:
            shards = Path(source).glob("*.safetensors")
            name, size = Path(source).name, sum(Checkpoint.open(shard).stored_bytes() for shard in shards)
        self.report(f"loading {what} from {name} ({size / 2**30:.2f} GiB on disk)")

    def transformer(self):
        """The X0 (denoised-output) wrapper of the DiT as the checkpoint stores it (float, fp8 or
        quantized), LoRAs fused and quantized as asked."""
        from LTX_2_MLX.model.transformer import X0Model
        from LTX_2_MLX.quantization import load_prepared_transformer

        extras = [f"{self.quantization} quantization"] if self.quantization else []
        extras += [f"{len(self.loras)} LoRA{'s' * (len(self.loras) > 1)}"] if self.loras else []
        self._announce("the transformer" + (f" ({', '.join(extras)})" if extras else ""), self.checkpoint,
                       "model.diffusion_model.")  # fmt: skip
        tasks, self._while_loading = self._while_loading, []  # streamed and parallel loads drop them
        if self.parallel is not None:
            from LTX_2_MLX.distributed import parallel_transformer

            if self.low_memory:
                raise ValueError(
                    f"--low-memory streams the whole DiT through one process; it does not combine with --parallel "
                    f"{self.parallel}. Drop one of the two (each process of --parallel tensor holds only its share)."
                )
            return parallel_transformer(self.parallel, self.checkpoint, self.dtype, self.loras, self.quantization)
        if self.low_memory:
            from LTX_2_MLX.quantization.streaming import load_streamed_transformer

            model = load_streamed_transformer(self.checkpoint, self.dtype, self.loras, self.quantization)
        else:
            with while_reading(tasks):
                model = load_prepared_transformer(self.checkpoint, self.dtype, self.loras, self.quantization)
        if self.eval_blocks is not None:
            model.eval_blocks = self.eval_blocks
        return X0Model(model)

    def prepare_while_loading(self, tasks: list[Callable[[], None]]) -> None:
        """Run `tasks` while the next resident DiT load waits for its reads (`while_reading`)."""
        self._while_loading = list(tasks)

    def warm_audio_decode(self, frames: int, mel_bins: int) -> None:
        """Decode `frames` latent frames of silence and drop the models: what the audio decode
        builds on first use (cuDNN convolution graphs on CUDA) is then built."""
        from LTX_2_MLX.model.audio_vae import decode_audio

        silence = mx.zeros((1, self.audio_latent_channels, frames, mel_bins), self.dtype)
        mx.eval(decode_audio(silence, *self._load_audio_decoder_and_vocoder()).waveform)

    def encode_prompts(self, prompts: list[str], enhance_first_prompt: bool = False, image=None, seed: int = 42):
        """[(video_context, audio_context, mask)] per prompt; Gemma runs only for prompts with
        no precomputed embeddings, and is freed before returning."""
        from LTX_2_MLX.loader.text_encoder import encode_prompts
        from LTX_2_MLX.model.text_encoder import load_prompt_embeddings

        files = [*self.precomputed_embeddings, *[None] * len(prompts)][: len(prompts)]
        results = [load_prompt_embeddings(f) if f is not None else None for f in files]
        missing = [prompt for prompt, result in zip(prompts, results) if result is None]
        if not missing:
            if enhance_first_prompt:
                raise ValueError("--enhance-prompt rewrites the prompt before encoding: it cannot apply to --embedding")
            return results
        if self.gemma_path is None:
            raise ValueError("encoding a prompt needs the Gemma 3 directory: pass --gemma-path (or --embedding files)")
        self._announce("the Gemma 3 text encoder", self.gemma_path)
        encoded = iter(
            encode_prompts(
                missing, self.gemma_path, self.checkpoint, dtype=self.dtype, quantize_bits=self.text_encoder_bits,
                enhance_first_prompt=enhance_first_prompt and results[0] is None, enhance_prompt_image=image,
                enhance_prompt_seed=seed, eval_layers=self.eval_blocks,
                low_memory=self.low_memory if self.text_encoder_low_memory is None else self.text_encoder_low_memory,
                on_enhanced=lambda prompt: self.report(f"enhanced prompt: {prompt}"),
            )
        )  # fmt: skip
        return [result if result is not None else next(encoded) for result in results]

    def video_encoder(self):
        from LTX_2_MLX.loader import load_video_vae

        self._announce("the video VAE encoder", self.checkpoint, "vae.encoder.")
        return load_video_vae(self.checkpoint, dtype=self.dtype, decoder=False).encoder

    def latent_statistics(self):
        """The video VAE's per-channel latent statistics (a PerChannelStatistics, the same values
        as `video_encoder().per_channel_statistics`), read from the checkpoint without building
        the encoder: what `upsample_latent` un-normalises and re-normalises with."""
        from LTX_2_MLX.loader.video_vae import load_latent_statistics

        return load_latent_statistics(self.checkpoint, dtype=self.dtype)

    def video_decoder(self):
        from LTX_2_MLX.loader import load_video_vae

        self._announce("the video VAE decoder", self.checkpoint, "vae.decoder.")
        return load_video_vae(self.checkpoint, dtype=self.dtype, encoder=False).decoder

    def _require_audio(self) -> None:
        if not self.has_audio:
            raise CheckpointError(f"{self.checkpoint.path}: holds no audio VAE / vocoder; it cannot make audio.")

    def audio_encoder(self):
        """The audio VAE's encoder alone (for audio given as input)."""
        from LTX_2_MLX.loader.audio_vae import load_audio_vae

        self._require_audio()
        self._announce("the audio VAE encoder", self.checkpoint, "audio_vae.encoder.")
        return load_audio_vae(self.checkpoint, dtype=self.dtype, decoder=False).encoder

    def audio_decoder_and_vocoder(self):
        self._require_audio()
        self._announce("the audio VAE decoder and vocoder", self.checkpoint, "audio_vae.decoder.")
        return self._load_audio_decoder_and_vocoder()

    def _load_audio_decoder_and_vocoder(self):
        from LTX_2_MLX.loader.audio_vae import load_audio_vae, load_vocoder

        decoder = load_audio_vae(self.checkpoint, dtype=self.dtype, encoder=False).decoder
        return decoder, load_vocoder(self.checkpoint, dtype=self.dtype)

    def spatial_upscaler(self):
        from LTX_2_MLX.loader import load_upscaler

        if self.spatial_upscaler_path is None:
            raise ValueError("two-stage generation needs the spatial upscaler: pass --spatial-upscaler-path")
        upscaler = Checkpoint.open(self.spatial_upscaler_path)
        self._announce("the spatial upscaler", upscaler)
        return load_upscaler(upscaler, dtype=self.dtype)
