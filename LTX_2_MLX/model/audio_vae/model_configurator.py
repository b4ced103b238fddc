"""The `audio_vae` and `vocoder` sections of an LTX-2 checkpoint's config, read the way
ltx-core's Audio{En,De}coderConfigurator and VocoderConfigurator read them (same keys, same
defaults), validated up front so a bad file fails with a message rather than inside a layer."""

from dataclasses import dataclass, field, fields

from LTX_2_MLX.model.audio_vae.attention import AttentionType
from LTX_2_MLX.model.audio_vae.causality_axis import CausalityAxis
from LTX_2_MLX.model.audio_vae.ops import NormType


def _enum(enum_type, value, key: str, section: str):
    try:
        return enum_type(value)
    except ValueError:
        allowed = ", ".join(repr(member.value) for member in enum_type)
        raise ValueError(f"{section} config: {key}={value!r} is not one of {allowed}") from None


@dataclass
class AudioVAEConfig:
    """audio_vae.model.params.ddconfig plus the sampling settings both halves carry."""

    ch: int = 128
    out_ch: int = 2
    ch_mult: tuple[int, ...] = (1, 2, 4)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (8, 16, 32)
    resolution: int = 256
    z_channels: int = 8
    double_z: bool = True
    dropout: float = 0.0
    resamp_with_conv: bool = True
    in_channels: int = 2
    attn_type: str = "vanilla"
    mid_block_add_attention: bool = True
    norm_type: str = "pixel"
    causality_axis: str | None = "height"
    sample_rate: int = 16000
    mel_hop_length: int = 160
    n_fft: int = 1024
    is_causal: bool = True
    mel_bins: int | None = None

    @classmethod
    def from_section(cls, audio_vae: dict) -> "AudioVAEConfig":
        """From the checkpoint config's `audio_vae` section."""
        if not isinstance(audio_vae, dict):
            raise TypeError(f"audio_vae config must be a JSON object, got {type(audio_vae).__name__}")
        params = audio_vae.get("model", {}).get("params", {})
        ddconfig = params.get("ddconfig", {})
        preprocessing = audio_vae.get("preprocessing", {})
        stft = preprocessing.get("stft", {})
        mel = preprocessing.get("mel", {})
        variables = audio_vae.get("variables", {})
        defaults = cls()
        architecture = {
            f.name: ddconfig.get(f.name, getattr(defaults, f.name))
            for f in fields(cls)
            if f.name not in ("sample_rate", "mel_hop_length", "n_fft", "is_causal", "mel_bins")
        }
        config = cls(
            **architecture,
            sample_rate=params.get("sampling_rate", 16000),
            mel_hop_length=stft.get("hop_length", 160),
            n_fft=stft.get("filter_length", 1024),
            is_causal=stft.get("causal", True),
            mel_bins=ddconfig.get("mel_bins") or mel.get("n_mel_channels") or variables.get("mel_bins"),
        )
        config.validate()
        return config

    def __post_init__(self):
        self.ch_mult = tuple(self.ch_mult)
        self.attn_resolutions = tuple(self.attn_resolutions)

    @property
    def norm(self) -> NormType:
        return NormType(self.norm_type)

    @property
    def causality(self) -> CausalityAxis:
        return CausalityAxis(self.causality_axis)

    @property
    def attention(self) -> AttentionType:
        return AttentionType(self.attn_type)

    def validate(self) -> None:
        section = "audio_vae"
        for key in (
            "ch",
            "out_ch",
            "num_res_blocks",
            "resolution",
            "z_channels",
            "in_channels",
            "mel_hop_length",
            "n_fft",
        ):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{section} config: {key} must be a positive integer, got {value!r}")
        if not self.ch_mult or not all(isinstance(m, int) and m > 0 for m in self.ch_mult):
            raise ValueError(
                f"{section} config: ch_mult must be a non-empty list of positive integers, got {self.ch_mult!r}"
            )
        if self.mel_bins is not None and (not isinstance(self.mel_bins, int) or self.mel_bins <= 0):
            raise ValueError(f"{section} config: mel_bins must be a positive integer, got {self.mel_bins!r}")
        norm = _enum(NormType, self.norm_type, "norm_type", section)
        axis = _enum(CausalityAxis, self.causality_axis, "causality_axis", section)
        attention = _enum(AttentionType, self.attn_type, "attn_type", section)
        if axis != CausalityAxis.NONE and norm == NormType.GROUP:
            raise ValueError(
                f"{section} config: causal convolutions (causality_axis={self.causality_axis!r}) cannot use "
                "norm_type='group'; LTX-2 checkpoints use 'pixel'"
            )
        if attention == AttentionType.LINEAR:
            raise ValueError(
                f"{section} config: attn_type='linear' is not supported (ltx-core has none); use 'vanilla'"
            )
        if axis != CausalityAxis.NONE and not self.resamp_with_conv:
            raise ValueError(f"{section} config: causal downsampling needs resamp_with_conv=true")


@dataclass
class GeneratorConfig:
    """One HiFi-GAN / BigVGAN generator, as ltx-core's `_vocoder_from_config` reads it."""

    resblock_kernel_sizes: list[int] = field(default_factory=lambda: [3, 7, 11])
    upsample_rates: list[int] = field(default_factory=lambda: [6, 5, 2, 2, 2])
    upsample_kernel_sizes: list[int] = field(default_factory=lambda: [16, 15, 8, 4, 4])
    resblock_dilation_sizes: list[list[int]] = field(default_factory=lambda: [[1, 3, 5], [1, 3, 5], [1, 3, 5]])
    upsample_initial_channel: int = 1024
    resblock: str = "1"
    output_sampling_rate: int = 24000
    activation: str = "snake"
    use_tanh_at_final: bool = True
    apply_final_activation: bool = True
    use_bias_at_final: bool = True

    @classmethod
    def from_dict(
        cls,
        cfg: dict,
        section: str,
        apply_final_activation: bool = True,
        output_sampling_rate: int | None = None,
    ) -> "GeneratorConfig":
        defaults = cls()
        values = {f.name: cfg.get(f.name, getattr(defaults, f.name)) for f in fields(cls)}
        values["apply_final_activation"] = apply_final_activation
        if output_sampling_rate is not None:
            values["output_sampling_rate"] = output_sampling_rate
        config = cls(**values)
        config.validate(section)
        return config

    def validate(self, section: str) -> None:
        if self.resblock not in ("1", "AMP1"):
            raise ValueError(f"{section} config: resblock={self.resblock!r} must be '1' (HiFi-GAN) or 'AMP1' (BigVGAN)")
        if self.activation not in ("snake", "snakebeta"):
            raise ValueError(f"{section} config: activation={self.activation!r} must be 'snake' or 'snakebeta'")
        if len(self.upsample_rates) != len(self.upsample_kernel_sizes):
            raise ValueError(
                f"{section} config: upsample_rates {self.upsample_rates} and upsample_kernel_sizes "
                f"{self.upsample_kernel_sizes} must have the same length"
            )
        if len(self.resblock_kernel_sizes) != len(self.resblock_dilation_sizes):
            raise ValueError(
                f"{section} config: resblock_kernel_sizes {self.resblock_kernel_sizes} and resblock_dilation_sizes "
                f"{self.resblock_dilation_sizes} must have the same length"
            )
        if any(len(d) < 3 for d in self.resblock_dilation_sizes):
            raise ValueError(f"{section} config: each resblock_dilation_sizes entry needs 3 dilations")
        if self.upsample_initial_channel % (2 ** len(self.upsample_rates)):
            raise ValueError(
                f"{section} config: upsample_initial_channel={self.upsample_initial_channel} must be divisible by "
                f"2^{len(self.upsample_rates)} (it halves at each upsampling)"
            )


@dataclass
class BandwidthExtensionConfig:
    """The `bwe` part of an LTX-2.3 vocoder config: rates and the causal STFT of the BWE mel."""

    input_sampling_rate: int
    output_sampling_rate: int
    n_fft: int
    hop_length: int
    num_mels: int


@dataclass
class VocoderConfig:
    vocoder: GeneratorConfig
    bwe_generator: GeneratorConfig | None = None
    bwe: BandwidthExtensionConfig | None = None

    @classmethod
    def from_section(cls, cfg: dict) -> "VocoderConfig":
        """From the checkpoint config's `vocoder` section: flat (LTX-2, HiFi-GAN) or nested
        {"vocoder": ..., "bwe": ...} (LTX-2.3, BigVGAN v2 plus bandwidth extension)."""
        if not isinstance(cfg, dict):
            raise TypeError(f"vocoder config must be a JSON object, got {type(cfg).__name__}")
        if "bwe" not in cfg:
            _expect(cfg, "resblock", "1", "vocoder")
            _expect(cfg, "stereo", True, "vocoder")
            return cls(vocoder=GeneratorConfig.from_dict(cfg, "vocoder"))
        vocoder_cfg, bwe_cfg = cfg.get("vocoder", {}), cfg["bwe"]
        for part, section in (
            (vocoder_cfg, "vocoder.vocoder"),
            (bwe_cfg, "vocoder.bwe"),
        ):
            _expect(part, "resblock", "AMP1", section)
            _expect(part, "stereo", True, section)
            _expect(part, "activation", "snakebeta", section)
        missing = [
            k
            for k in (
                "input_sampling_rate",
                "output_sampling_rate",
                "n_fft",
                "hop_length",
                "num_mels",
            )
            if k not in bwe_cfg
        ]
        if missing:
            raise ValueError(f"vocoder.bwe config lacks {', '.join(missing)}; is this an LTX-2.3 checkpoint?")
        bwe = BandwidthExtensionConfig(**{f.name: bwe_cfg[f.name] for f in fields(BandwidthExtensionConfig)})
        vocoder = GeneratorConfig.from_dict(
            vocoder_cfg, "vocoder.vocoder", output_sampling_rate=bwe.input_sampling_rate
        )
        bwe_generator = GeneratorConfig.from_dict(
            bwe_cfg,
            "vocoder.bwe",
            apply_final_activation=False,
            output_sampling_rate=bwe.output_sampling_rate,
        )
        if bwe.output_sampling_rate % bwe.input_sampling_rate:
            raise ValueError(
                f"vocoder.bwe config: output_sampling_rate={bwe.output_sampling_rate} must be a multiple of "
                f"input_sampling_rate={bwe.input_sampling_rate}"
            )
        ratio = bwe.output_sampling_rate // bwe.input_sampling_rate
        total = 1
        for rate in bwe_generator.upsample_rates:
            total *= rate
        if total != bwe.hop_length * ratio:
            raise ValueError(
                f"vocoder.bwe config: the BWE generator upsamples by {total}, but one mel frame of hop_length="
                f"{bwe.hop_length} covers {bwe.hop_length * ratio} output samples"
            )
        if 2 * bwe.num_mels != 128:
            raise ValueError(f"vocoder.bwe config: num_mels={bwe.num_mels}; the stereo generator takes 2 x 64 mel bins")
        return cls(vocoder=vocoder, bwe_generator=bwe_generator, bwe=bwe)


def _expect(cfg: dict, key: str, expected, section: str) -> None:
    actual = cfg.get(key)
    if actual != expected:
        raise ValueError(f"{section} config: {key} is {actual!r}, expected {expected!r} (as ltx-core requires)")
