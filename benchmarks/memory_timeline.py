"""Memory over time during a benchmark run: a sampler thread and a PNG plot of what it records.

In a benchmark, sample MLX's active memory while the work runs, naming each phase as it starts:

    sampler = MemorySampler(interval=0.05)
    sampler.start()
    sampler.mark("text encoder")
    ...
    sampler.mark("denoise")
    ...
    sampler.stop()
    draw_timeline(sampler.samples, "memory.png", title="distilled fp8 default")

From the command line, one PNG per run of an end-to-end benchmark's JSON (`{"runs": [...]}`, as
benchmarks/end_to_end.py writes it; runs without a "timeline" are skipped):

    python benchmarks/memory_timeline.py E2E.json --out DIR
"""

import argparse
import json
import math
import threading
import time
from pathlib import Path

import mlx.core as mx
from PIL import Image, ImageDraw, ImageFont

GIB = 1024**3
SIZE = (1200, 500)
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 90, 30, 50, 55

BACKGROUND = (255, 255, 255)
LINE_COLOUR = (200, 30, 30)
AXIS_COLOUR = (60, 60, 60)
GRID_COLOUR = (215, 215, 215)
TEXT_COLOUR = (20, 20, 20)
PHASE_TEXT_COLOUR = (70, 70, 110)
BAND_COLOURS = ((224, 234, 252), (252, 236, 214))


class MemorySampler:
    """Records (seconds since start, mx.get_active_memory(), phase) every `interval` seconds on a
    background thread. `mark(phase)` names the phase of the samples that follow."""

    def __init__(self, interval: float = 0.05):
        self.interval = interval
        self.samples: list[dict] = []
        self._phase = ""
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._started_at: float | None = None

    def start(self) -> "MemorySampler":
        if self._thread is not None:
            raise RuntimeError("MemorySampler is already running")
        self._started_at = time.perf_counter()
        self._stopping.clear()
        self._record()
        self._thread = threading.Thread(target=self._run, name="memory-sampler", daemon=True)
        self._thread.start()
        return self

    def mark(self, phase: str) -> None:
        """Name the phase of the following samples, and sample now (if started)."""
        with self._lock:
            self._phase = phase
        if self._started_at is not None:
            self._record()

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stopping.set()
        self._thread.join()
        self._thread = None
        self._record()  # the end of the last phase

    def __enter__(self) -> "MemorySampler":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stopping.wait(self.interval):
            self._record()

    def _record(self) -> None:
        # Under the lock so that the time, the phase and the order of the list agree with each other.
        with self._lock:
            self.samples.append(
                {
                    "t": time.perf_counter() - self._started_at,
                    "bytes": int(mx.get_active_memory()),
                    "phase": self._phase,
                }
            )


def nice_step(span: float, max_ticks: int = 8) -> float:
    """The smallest of 1, 2, 5 times a power of ten that cuts `span` into at most `max_ticks` parts."""
    if span <= 0:
        return 1.0
    magnitude = 10 ** math.floor(math.log10(span / max_ticks))
    for factor in (1, 2, 5, 10):
        if span / (factor * magnitude) <= max_ticks:
            return factor * magnitude
    return 10 * magnitude


def tick_label(value: float, step: float) -> str:
    decimals = max(0, -math.floor(math.log10(step)))
    return f"{value:.{decimals}f}"


def load_font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # an old Pillow, or one without FreeType: the bitmap font
        return ImageFont.load_default()


def text_size(draw: ImageDraw.ImageDraw, text: str, font) -> tuple[int, int]:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    return right - left, bottom - top


def truncate(draw: ImageDraw.ImageDraw, text: str, font, width: float) -> str:
    """`text`, shortened with '..' until it fits in `width` pixels ('' if not even one letter does)."""
    if text_size(draw, text, font)[0] <= width:
        return text
    for end in range(len(text) - 1, 0, -1):
        candidate = text[:end] + ".."
        if text_size(draw, candidate, font)[0] <= width:
            return candidate
    return ""


def draw_rotated(image: Image.Image, text: str, font, position: tuple[int, int], colour) -> None:
    """`text` written bottom to top, its top-left corner at `position`."""
    scratch = ImageDraw.Draw(image)
    left, top, right, bottom = scratch.textbbox((0, 0), text, font=font)
    label = Image.new("RGBA", (right - left + 2, bottom - top + 2), (0, 0, 0, 0))
    ImageDraw.Draw(label).text((-left + 1, -top + 1), text, font=font, fill=colour)
    label = label.rotate(90, expand=True)
    image.paste(label, position, label)


def phase_spans(samples: list[dict]) -> list[tuple[str, float, float]]:
    """(phase, start, end) for each run of consecutive samples of one phase; a phase ends where the next begins."""
    spans = []
    for sample in samples:
        if spans and spans[-1][0] == sample["phase"]:
            continue
        if spans:
            spans[-1][2] = sample["t"]
        spans.append([sample["phase"], sample["t"], sample["t"]])
    if spans:
        spans[-1][2] = samples[-1]["t"]
    return [tuple(span) for span in spans]


class Plot:
    """Data coordinates (seconds, GiB) to pixels, inside the margins."""

    def __init__(self, t_max: float, gib_max: float):
        self.t_max, self.gib_max = t_max, gib_max
        self.left, self.top = MARGIN_LEFT, MARGIN_TOP
        self.right, self.bottom = SIZE[0] - MARGIN_RIGHT, SIZE[1] - MARGIN_BOTTOM

    def x(self, t: float) -> float:
        return self.left + (self.right - self.left) * t / self.t_max

    def y(self, gib: float) -> float:
        return self.bottom - (self.bottom - self.top) * gib / self.gib_max


def draw_phases(image: Image.Image, draw: ImageDraw.ImageDraw, plot: Plot, samples: list[dict], font) -> None:
    named = [span for span in phase_spans(samples) if span[0]]
    for index, (phase, start, end) in enumerate(named):
        end = plot.t_max if index == len(named) - 1 else end  # the last phase runs to the axis' end
        x0, x1 = plot.x(start), plot.x(end)
        draw.rectangle((x0, plot.top, max(x1, x0 + 1), plot.bottom), fill=BAND_COLOURS[index % 2])
        width, height = text_size(draw, phase, font)
        if width + 6 <= x1 - x0:
            draw.text((x0 + 3, plot.top + 3), phase, font=font, fill=PHASE_TEXT_COLOUR)
        elif x1 - x0 >= height / 2:
            # Too narrow to write across: write upwards, centred on the band even if the letters spill past it a
            # little (bands thinner still, a fraction of a second in a long run, go unnamed).
            label = truncate(draw, phase, font, plot.bottom - plot.top - 6)
            if label:
                draw_rotated(image, label, font, (int((x0 + x1 - height) / 2), plot.top + 3), PHASE_TEXT_COLOUR)


def draw_grid(draw: ImageDraw.ImageDraw, plot: Plot, font) -> None:
    step = nice_step(plot.gib_max)
    for index in range(int(plot.gib_max / step) + 1):
        gib = index * step
        y = plot.y(gib)
        draw.line((plot.left, y, plot.right, y), fill=GRID_COLOUR)
        label = tick_label(gib, step)
        width, height = text_size(draw, label, font)
        draw.text((plot.left - width - 6, y - height / 2 - 2), label, font=font, fill=TEXT_COLOUR)
    step = nice_step(plot.t_max, max_ticks=12)
    for index in range(int(plot.t_max / step) + 1):
        t = index * step
        x = plot.x(t)
        draw.line((x, plot.bottom, x, plot.bottom + 4), fill=AXIS_COLOUR)
        label = tick_label(t, step)
        width, _ = text_size(draw, label, font)
        draw.text((x - width / 2, plot.bottom + 6), label, font=font, fill=TEXT_COLOUR)
    draw.line((plot.left, plot.top, plot.left, plot.bottom), fill=AXIS_COLOUR)
    draw.line((plot.left, plot.bottom, plot.right, plot.bottom), fill=AXIS_COLOUR)


def draw_labels(image: Image.Image, draw: ImageDraw.ImageDraw, plot: Plot, title: str, font, title_font) -> None:
    width, height = text_size(draw, "seconds", font)
    draw.text(((plot.left + plot.right - width) / 2, SIZE[1] - height - 10), "seconds", font=font, fill=TEXT_COLOUR)
    y_label = "GiB active (MLX)"
    width, height = text_size(draw, y_label, font)
    draw_rotated(image, y_label, font, (12, int((plot.top + plot.bottom - width) / 2)), TEXT_COLOUR)
    if title:
        title = truncate(draw, title, title_font, SIZE[0] - 20)
        width, _ = text_size(draw, title, title_font)
        draw.text(((SIZE[0] - width) / 2, 14), title, font=title_font, fill=TEXT_COLOUR)


def draw_memory(draw: ImageDraw.ImageDraw, plot: Plot, samples: list[dict]) -> None:
    points = [(plot.x(sample["t"]), plot.y(sample["bytes"] / GIB)) for sample in samples]
    if len(points) == 1:
        x, y = points[0]
        draw.ellipse((x - 4, y - 4, x + 4, y + 4), fill=LINE_COLOUR)
    else:
        draw.line(points, fill=LINE_COLOUR, width=2, joint="curve")


def draw_timeline(samples: list[dict], path, title: str = "") -> Path:
    """A PNG of `samples` (MemorySampler.samples) at `path`: active GiB against seconds, phases shaded."""
    if not samples:
        raise ValueError("draw_timeline: no samples to draw (was the MemorySampler started and stopped?)")
    samples = sorted(samples, key=lambda sample: sample["t"])
    t_max = max(samples[-1]["t"], 0.0) or 1.0  # one sample, or all at t=0: a one-second axis
    gib_max = max(sample["bytes"] for sample in samples) / GIB * 1.1 or 1.0
    plot = Plot(t_max, gib_max)
    font, title_font = load_font(13), load_font(16)

    image = Image.new("RGB", SIZE, BACKGROUND)
    draw = ImageDraw.Draw(image)
    draw_phases(image, draw, plot, samples, font)
    draw_grid(draw, plot, font)
    draw_memory(draw, plot, samples)
    draw_labels(image, draw, plot, title, font, title_font)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG")
    return path


def draw_runs(runs: list[dict], folder) -> list[Path]:
    """One PNG per run that has a "timeline", named memory-{pipeline}-{precision}-{mode}.png in `folder`."""
    folder = Path(folder)
    paths = []
    for run in runs:
        if not run.get("timeline"):
            continue
        name = f"{run['pipeline']}-{run['precision']}-{run['mode']}"
        title = f"{run['pipeline']} {run['precision']} {run['mode']}"
        paths.append(draw_timeline(run["timeline"], folder / f"memory-{name}.png", title=title))
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description="Memory timelines of an end-to-end benchmark's runs, as PNGs.")
    parser.add_argument("json", type=Path, help='the benchmark\'s JSON: {"runs": [...]}')
    parser.add_argument("--out", type=Path, help="folder for the PNGs (default: beside the JSON)")
    args = parser.parse_args()
    runs = json.loads(args.json.read_text())["runs"]
    paths = draw_runs(runs, args.out or args.json.parent)
    if not paths:
        raise SystemExit(f"{args.json}: no run has a timeline")
    for path in paths:
        print(path)


if __name__ == "__main__":
    main()
