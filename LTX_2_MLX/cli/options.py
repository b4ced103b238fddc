"""Options that take a varying number of values, as ltx-pipelines' argparse actions do:
`--lora PATH [STRENGTH]`, `--image PATH FRAME STRENGTH [CRF]`, `--video-stg-blocks N [N ...]`."""

import math
from pathlib import Path

import click


class VariadicOption(click.Option):
    """A repeatable option taking `min_values` to `max_values` values each time it is given;
    values are taken until the next `--option`."""

    def __init__(self, *args, min_values: int = 1, max_values: int | None = None, **kwargs):
        super().__init__(*args, type=click.UNPROCESSED, **kwargs)
        self.min_values, self.max_values = min_values, max_values

    def add_to_parser(self, parser, ctx: click.Context) -> None:
        super().add_to_parser(parser, ctx)
        for name in self.opts:
            parser_option = parser._long_opt[name]
            process = parser_option.process

            def take_values(value, state, process=process):
                values = [value]
                while (self.max_values is None or len(values) < self.max_values) and state.rargs:
                    if state.rargs[0].startswith("--"):
                        break
                    values.append(state.rargs.pop(0))
                process(tuple(values), state)

            parser_option.process = take_values

    def values_of(self, ctx: click.Context, given: tuple) -> tuple:
        if len(given) < self.min_values:
            raise click.BadParameter(f"takes {self.metavar}, got {' '.join(given) or 'nothing'}", ctx, self)
        return given


def _existing_file(value: str, ctx: click.Context, option: click.Parameter) -> str:
    path = Path(value)
    if not path.exists():
        raise click.BadParameter(f"{value}: no such file", ctx, option)
    if path.is_dir():
        raise click.BadParameter(f"{value} is a directory; give a file", ctx, option)
    return str(path)


def _number(value: str, kind: type, what: str, low: float, high: float, ctx, option) -> float | int:
    try:
        number = kind(value)
    except ValueError:
        raise click.BadParameter(f"{what} {value!r} is not a number", ctx, option) from None
    if not (math.isfinite(number) and low <= number <= high):
        raise click.BadParameter(f"{what} {value} must be in [{low:g}, {high:g}]", ctx, option)
    return number


def lora_values(ctx: click.Context, option: VariadicOption, given: tuple) -> list[tuple[str, float]]:
    """`PATH [STRENGTH]` each time; the strength defaults to 1.0, as the reference."""
    loras = []
    for values in given:
        path, *strength = option.values_of(ctx, values)
        loras.append((_existing_file(path, ctx, option),
                       _number(strength[0], float, "strength", -math.inf, math.inf, ctx, option) if strength else 1.0))
    return loras


def single_lora_value(ctx: click.Context, option: VariadicOption, given: tuple) -> tuple[str, float] | None:
    loras = lora_values(ctx, option, given)
    if len(loras) > 1:
        raise click.BadParameter("give it once", ctx, option)
    return loras[0] if loras else None


def image_values(ctx: click.Context, option: VariadicOption, given: tuple) -> list[tuple[str, int, float, int | None]]:
    """`PATH FRAME STRENGTH [CRF]` each time; CRF None takes the reference's default."""
    images = []
    for values in given:
        path, frame, strength, *crf = option.values_of(ctx, values)
        images.append((
            _existing_file(path, ctx, option), _number(frame, int, "frame", 0, 10**9, ctx, option),
            _number(strength, float, "strength", 0.0, 1.0, ctx, option),
            _number(crf[0], int, "CRF", 0, 51, ctx, option) if crf else None,
        ))  # fmt: skip
    return images


def block_values(ctx: click.Context, option: VariadicOption, given: tuple) -> list[int] | None:
    """`N [N ...]`: transformer block indices, once."""
    if not given:
        return None
    if len(given) > 1:
        raise click.BadParameter("give it once, with every block after it", ctx, option)
    return [_number(value, int, "block", 0, 10**6, ctx, option) for value in option.values_of(ctx, given[0])]
