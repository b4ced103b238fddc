"""Generate a video with audio: `python scripts/generate.py --prompt ...` is `ltx2-mlx generate --prompt ...`."""

import sys

from LTX_2_MLX.cli import main

if __name__ == "__main__":
    main(["generate", *sys.argv[1:]], prog_name="ltx2-mlx")
