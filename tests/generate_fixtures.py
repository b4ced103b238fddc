"""The tiny but complete model files the CLI tests run on: an LTX-2.3-layout checkpoint (DiT,
video VAE, audio VAE, vocoder, text projection and connectors in one file), a tiny Gemma 3
directory, a conditioning image, a latent upscaler and a small LoRA. Built once per session
(conftest.py's `model_files`)."""

import numpy as np
import torch
from PIL import Image
from reference import save_checkpoint, seed_module_
from safetensors.torch import load_file
from test_audio_vae import _audio_vae_checkpoint, _vocoder_checkpoint, tiny_audio_vae_config, tiny_hifigan_config
from test_text_encoder import _image_processor, _tiny_gemma_config, _train_tokenizer
from test_text_encoder_processor import official_tensors, reference_processor
from test_upscaler import TINY as UPSCALER
from test_upscaler import _reference_upsampler
from test_video_vae import LATENT_CHANNELS, Reference, tiny_config
from transformer_fixtures import build_reference_transformer, prefixed, tiny_transformer_config


def build_model_files(tmp_path_factory):
    from transformers import Gemma3ForConditionalGeneration

    folder = tmp_path_factory.mktemp("generate")
    gemma = folder / "gemma"
    gemma.mkdir()
    gemma_model = seed_module_(Gemma3ForConditionalGeneration(_tiny_gemma_config(_train_tokenizer(gemma))), 5)
    gemma_model.save_pretrained(str(gemma), safe_serialization=True)
    _image_processor().save_pretrained(str(gemma))

    config = tiny_transformer_config("2.3")
    config["transformer"].update(in_channels=LATENT_CHANNELS, out_channels=LATENT_CHANNELS)
    processor, processor_config = reference_processor(True, "split", True, True, True, seed=3, gemma_width=64, num_states=4)
    config["transformer"].update({k: v for k, v in processor_config.items() if k.startswith(("connector", "audio_connector", "caption"))})
    tensors = official_tensors(processor, audio=True)
    tensors.update(prefixed("model.diffusion_model.", build_reference_transformer(config, seed=2).state_dict()))
    video_vae = Reference(tmp_path_factory, tiny_config("zeros"), seed=4)
    tensors.update(video_vae.tensors)
    config["vae"] = video_vae.config
    audio_path, _, _ = _audio_vae_checkpoint(folder, tiny_audio_vae_config(), seed=6)
    vocoder_path, _ = _vocoder_checkpoint(tmp_path_factory, tiny_hifigan_config(), "vocoder", seed=7)
    tensors.update(load_file(audio_path))
    tensors.update(load_file(vocoder_path))
    audio_config = tiny_audio_vae_config()
    # The vocoder takes 2 x 64 mel bins, as in LTX-2; the decoder zero-pads its 16 up to that.
    audio_config["model"]["params"]["ddconfig"]["mel_bins"] = 64
    config.update(audio_vae=audio_config, vocoder=tiny_hifigan_config())
    checkpoint = save_checkpoint(folder / "ltx-tiny.safetensors", tensors, config)
    image = folder / "first.png"
    Image.fromarray(np.random.RandomState(0).randint(0, 255, (80, 70, 3)).astype(np.uint8)).save(image)
    upscaler_config = {**UPSCALER, "in_channels": LATENT_CHANNELS}
    upscaler = _reference_upsampler(upscaler_config, seed=8)
    upscaler_path = save_checkpoint(folder / "upscaler.safetensors", upscaler.state_dict(), upscaler_config)
    gen = torch.Generator().manual_seed(9)
    lora = {}
    for layer, (out_dim, in_dim) in {"transformer_blocks.0.attn1.to_q": (32, 32), "transformer_blocks.1.ff.net.2": (32, 128)}.items():
        lora[f"diffusion_model.{layer}.lora_A.weight"] = torch.randn(4, in_dim, generator=gen) * 0.1
        lora[f"diffusion_model.{layer}.lora_B.weight"] = torch.randn(out_dim, 4, generator=gen) * 0.1
    lora_path = save_checkpoint(folder / "distilled-lora.safetensors", lora, None)
    return checkpoint, gemma, image, upscaler_path, lora_path, folder


