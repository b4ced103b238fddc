"""Generate a video with audio: `python scripts/generate.py --checkpoint-path ... --gemma-path ... --prompt ...`
(the same as the installed `ltx2-mlx generate`)."""

from LTX_2_MLX.cli import generate

if __name__ == "__main__":
    generate()
