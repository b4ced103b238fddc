"""Convert an official LTX-2 checkpoint to another dtype: `python scripts/convert_weights.py SRC DST --dtype bfloat16`
is `ltx2-mlx convert SRC DST --dtype bfloat16`."""

import sys

from LTX_2_MLX.cli import main

if __name__ == "__main__":
    main(["convert", *sys.argv[1:]], prog_name="ltx2-mlx")
