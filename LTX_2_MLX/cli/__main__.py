"""`python -m LTX_2_MLX.cli ...` is `ltx2-mlx ...`."""

from LTX_2_MLX.cli import main

main(prog_name="ltx2-mlx")
