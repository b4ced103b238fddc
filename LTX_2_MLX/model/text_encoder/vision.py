"""Gemma 3's image path, used only by image-to-video prompt enhancement: the SigLIP vision
tower, the multimodal projector (average pool to `mm_tokens_per_image` tokens, RMS norm,
projection to Gemma's width) and the image preprocessing of Gemma3ImageProcessor."""

from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from LTX_2_MLX.model.text_encoder.gemma import RMSNorm

# transformers' SiglipVisionConfig defaults, for keys Gemma's config.json leaves out.
_VISION_DEFAULTS = {"num_channels": 3, "layer_norm_eps": 1e-6, "hidden_act": "gelu_pytorch_tanh"}
_VISION_REQUIRED = (
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "image_size",
    "patch_size",
)


@dataclass
class VisionConfig:
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    image_size: int
    patch_size: int
    num_channels: int
    layer_norm_eps: float
    mm_tokens_per_image: int
    text_hidden_size: int
    image_token_id: int
    boi_token_id: int
    eoi_token_id: int

    def __post_init__(self):
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"vision hidden_size={self.hidden_size} is not a multiple of its {self.num_attention_heads} heads."
            )
        side = round(self.mm_tokens_per_image**0.5)
        if side * side != self.mm_tokens_per_image or self.patches_per_side % side:
            raise ValueError(
                f"mm_tokens_per_image={self.mm_tokens_per_image} must be a square whose side divides the "
                f"{self.patches_per_side} patches per image side."
            )

    @property
    def patches_per_side(self) -> int:
        return self.image_size // self.patch_size

    @classmethod
    def from_dict(cls, config: dict, text_hidden_size: int, where: str = "config.json") -> "VisionConfig | None":
        """None when the directory holds a text-only Gemma (no `vision_config`)."""
        vision = config.get("vision_config")
        if vision is None:
            return None
        missing = [k for k in _VISION_REQUIRED if k not in vision]
        if missing:
            raise ValueError(f"{where}: vision_config lacks {missing}; is this a Gemma 3 multimodal config?")
        values = {**_VISION_DEFAULTS, **vision}
        if values["hidden_act"] != "gelu_pytorch_tanh":
            raise ValueError(f"{where}: vision hidden_act={values['hidden_act']!r}, expected gelu_pytorch_tanh.")
        return cls(
            **{k: values[k] for k in (*_VISION_REQUIRED, "num_channels", "layer_norm_eps")},
            mm_tokens_per_image=config.get("mm_tokens_per_image", 256),
            text_hidden_size=text_hidden_size,
            image_token_id=config.get("image_token_index", 262_144),
            boi_token_id=config.get("boi_token_index", 255_999),
            eoi_token_id=config.get("eoi_token_index", 256_000),
        )


class SiglipAttention(nn.Module):
    def __init__(self, dims: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q_proj = nn.Linear(dims, dims)
        self.k_proj = nn.Linear(dims, dims)
        self.v_proj = nn.Linear(dims, dims)
        self.out_proj = nn.Linear(dims, dims)

    def __call__(self, x: mx.array) -> mx.array:
        b, t, d = x.shape
        q, k, v = (
            p(x).reshape(b, t, self.heads, -1).transpose(0, 2, 1, 3) for p in (self.q_proj, self.k_proj, self.v_proj)
        )
        out = mx.fast.scaled_dot_product_attention(q, k, v, scale=(d // self.heads) ** -0.5)
        return self.out_proj(out.transpose(0, 2, 1, 3).reshape(b, t, d))


class SiglipMLP(nn.Module):
    def __init__(self, dims: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dims, hidden)
        self.fc2 = nn.Linear(hidden, dims)

    def __call__(self, x: mx.array) -> mx.array:
        return self.fc2(nn.gelu_approx(self.fc1(x)))


class SiglipEncoderLayer(nn.Module):
    def __init__(self, config: VisionConfig):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.self_attn = SiglipAttention(config.hidden_size, config.num_attention_heads)
        self.layer_norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = SiglipMLP(config.hidden_size, config.intermediate_size)

    def __call__(self, x: mx.array) -> mx.array:
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class SiglipVisionEmbeddings(nn.Module):
    def __init__(self, config: VisionConfig):
        super().__init__()
        self.patch_embedding = nn.Conv2d(
            config.num_channels, config.hidden_size, kernel_size=config.patch_size, stride=config.patch_size
        )
        self.position_embedding = nn.Embedding(config.patches_per_side**2, config.hidden_size)

    def __call__(self, pixel_values: mx.array) -> mx.array:
        patches = self.patch_embedding(pixel_values)  # (B, H/p, W/p, C), row-major as torch's flatten(2)
        b, _, _, c = patches.shape
        return patches.reshape(b, -1, c) + self.position_embedding.weight


class SiglipVisionModel(nn.Module):
    def __init__(self, config: VisionConfig):
        super().__init__()
        self.embeddings = SiglipVisionEmbeddings(config)
        self.encoder_layers = [SiglipEncoderLayer(config) for _ in range(config.num_hidden_layers)]
        self.post_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def __call__(self, pixel_values: mx.array) -> mx.array:
        x = self.embeddings(pixel_values)
        for layer in self.encoder_layers:
            x = layer(x)
        return self.post_layernorm(x)


class MultiModalProjector(nn.Module):
    def __init__(self, config: VisionConfig):
        super().__init__()
        self.config = config
        self.mm_input_projection_weight = mx.zeros((config.hidden_size, config.text_hidden_size))
        self.mm_soft_emb_norm = RMSNorm(config.hidden_size, config.layer_norm_eps)

    def __call__(self, vision_outputs: mx.array) -> mx.array:
        b, _, c = vision_outputs.shape
        side = self.config.patches_per_side
        tokens_side = round(self.config.mm_tokens_per_image**0.5)
        kernel = side // tokens_side
        grid = vision_outputs.reshape(b, tokens_side, kernel, tokens_side, kernel, c)
        pooled = grid.mean(axis=(2, 4)).reshape(b, tokens_side * tokens_side, c)
        return self.mm_soft_emb_norm(pooled) @ self.mm_input_projection_weight


class Gemma3Vision(nn.Module):
    """Image → `mm_tokens_per_image` embeddings of Gemma's width."""

    def __init__(self, config: VisionConfig):
        super().__init__()
        self.config = config
        self.vision_tower = SiglipVisionModel(config)
        self.multi_modal_projector = MultiModalProjector(config)

    def __call__(self, pixel_values: mx.array) -> mx.array:
        return self.multi_modal_projector(self.vision_tower(pixel_values))


def sanitize_vision(weights: dict[str, mx.array]) -> dict[str, mx.array]:
    """Hugging Face keys (`vision_tower.vision_model.*`, `multi_modal_projector.*`, under either
    multimodal layout) → this module's; the conv weight to MLX's channels-last layout. A
    SigLIP pooling head, if saved, is dropped: Gemma uses the last hidden state."""
    converted = {}
    for key, value in weights.items():
        for prefix in ("model.", ""):
            if key.startswith(prefix + "vision_tower.vision_model."):
                name = key[len(prefix + "vision_tower.vision_model.") :].replace("encoder.layers.", "encoder_layers.")
                if name.startswith("head."):
                    break
                if name == "embeddings.patch_embedding.weight":
                    value = value.transpose(0, 2, 3, 1)
                converted["vision_tower." + name] = value
                break
            if key.startswith(prefix + "multi_modal_projector."):
                converted[key[len(prefix) :]] = value
                break
    return converted


def preprocess_image(image, size: int, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)) -> mx.array:
    """Gemma3ImageProcessor without pan-and-scan: RGB, bilinear resize (PIL) to size×size,
    ×1/255, normalised. `image`: a path, a PIL image or an (H, W, 3) uint8 array. Returns
    (1, size, size, 3) float32, channels last."""
    from PIL import Image

    if isinstance(image, (str, bytes)) or hasattr(image, "__fspath__"):
        image = Image.open(image)
    if not isinstance(image, Image.Image):
        array = np.asarray(image)
        if array.dtype != np.uint8 or array.ndim != 3 or array.shape[-1] not in (3, 4):
            raise ValueError(f"the image must be (H, W, 3) uint8, got {array.shape} {array.dtype}.")
        image = Image.fromarray(array)
    resized = np.asarray(image.convert("RGB").resize((size, size), resample=Image.BILINEAR))
    pixels = (resized.astype(np.float64) * (1 / 255)).astype(np.float32)
    pixels = (pixels - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return mx.array(pixels[None])
