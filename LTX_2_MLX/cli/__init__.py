"""The `ltx2-mlx` command: generate, encode-prompt, inspect, convert, quantize."""

import os
import sys
from importlib.metadata import PackageNotFoundError, version

import click

from LTX_2_MLX.cli.runner import DEBUG_ENVIRONMENT, debug_requested, run_cli


def _version() -> str:
    try:
        return version("ltx-2-mlx")
    except PackageNotFoundError:
        return "unknown (not installed)"


def _set_debug(context: click.Context, parameter: click.Parameter, value: bool) -> None:
    if value:
        os.environ[DEBUG_ENVIRONMENT] = "1"


class LtxCommandGroup(click.Group):
    """A click group whose errors and signals end the way `runner` says."""

    def main(self, args=None, prog_name=None, **extra):
        extra["standalone_mode"] = False
        code = run_cli(lambda: super(LtxCommandGroup, self).main(args, prog_name, **extra), debug_requested)
        sys.exit(code)


@click.group(name="ltx2-mlx", cls=LtxCommandGroup)
@click.version_option(_version(), "--version", prog_name="ltx2-mlx", message="%(prog)s %(version)s")
@click.option("--debug", is_flag=True, expose_value=False, is_eager=True, callback=_set_debug,
              help=f"Show the full traceback of an unexpected error (or set {DEBUG_ENVIRONMENT}=1).")  # fmt: skip
def main() -> None:
    """LTX-2 audio-video generation in MLX."""


from LTX_2_MLX.cli import commands, generate  # noqa: E402  (the commands register on `main`)

__all__ = ["main", "commands", "generate"]
