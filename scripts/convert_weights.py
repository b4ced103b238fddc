"""Convert an official LTX-2 checkpoint to another dtype: `python scripts/convert_weights.py SRC DST --dtype bfloat16`."""

from LTX_2_MLX.cli import convert

if __name__ == "__main__":
    convert()
