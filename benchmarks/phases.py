"""Every phase benchmark, one after another on one GPU, MLX against the reference in each
(issue 12): the DiT forward (both layouts, both sizes), the video VAE decode and encode, the
vocoder (both kinds) and the Gemma 3 12B text encoder. Each script runs in its own process;
its output goes to OUT/<phase>.log and its figures to OUT/<phase>.json (for the two scripts
that print rather than write JSON, transformer_step.py and vae_decode.py, the figures are read
from their output). OUT/summary.json and OUT/summary.md gather every figure.

    python benchmarks/phases.py --out /tmp/phases          # the GPU run, about 5 minutes on one H200
    python benchmarks/phases.py --small --out /tmp/phases  # every script's --small, on the CPU
    python benchmarks/phases.py --only vocoder gemma       # some phases

On the GPU machine it needs MLX's CUDA build, torch with CUDA, ltx-core 1.0.0 and transformers
(4.5x or 5.x); the repository root is put on PYTHONPATH for the scripts. Phases still waiting
when `--budget` seconds have passed are skipped, so that the whole run ends in time.
"""

import argparse
import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness import write_json

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


@dataclass
class Phase:
    name: str
    script: str
    arguments: list[str] = field(default_factory=list)
    writes_json: bool = True  # takes --json PATH; otherwise its output is parsed
    timeout_s: int = 150


PHASES = [
    *(Phase(f"dit-{layout}-{size}", "transformer_step.py", ["--layout", layout, "--size", size], False)
      for layout in ("2.0", "2.3") for size in ("768x512x121", "1216x704x121")),
    Phase("vae-decode", "vae_decode.py", [], False),
    Phase("vae-encode", "vae_encode.py"),
    Phase("vocoder", "vocoder.py"),
    Phase("gemma", "gemma.py", timeout_s=180),
]  # fmt: skip

# Goals of issue 12 (MLX / reference); the phases it names no figure for: faster than the reference.
GOALS = {"vae-encode": 0.90, "gemma": 0.90}


def _number(text: str) -> float:
    return float("nan") if text == "nan" else float(text)


def parse_transformer_step(output: str, phase: Phase) -> list[dict]:
    """transformer_step.py's '  ltx-core 0.413 s median of 5 (a-b), N TFLOP/s, peak X GB' lines."""
    sides = {}
    pattern = (
        r"^\s*(ltx-core|MLX)\s+([\d.]+) s median of (\d+) \(([\d.]+)-([\d.]+)\), (\d+) TFLOP/s, "
        r"peak ([\d.]+|nan) GB"
    )
    for line in output.splitlines():
        found = re.match(pattern, line)
        if found:
            side, median, _, _, _, tflops, peak = found.groups()
            sides[side] = {"median_s": float(median), "peak_gb": _number(peak), "tflop_per_s": int(tflops)}
    title = next((line for line in output.splitlines() if line.startswith("DiT forward")), phase.name)
    if len(sides) < 2:
        return []
    ratio = sides["MLX"]["median_s"] / sides["ltx-core"]["median_s"]
    size = re.search(r"\d+x\d+x\d+", title)
    figure = {"phase": title, "size": size[0] if size else phase.arguments[-1], "reference": "ltx-core"}
    figure.update(mlx=sides["MLX"], ref=sides["ltx-core"], ratio=ratio, goal=GOALS.get(phase.name, 1.0), cosine=None)
    return [{**figure, "timing": "median of 5 after 2 warm-ups"}]


def parse_vae_decode(output: str, phase: Phase) -> list[dict]:
    """vae_decode.py's 'ltx-core untiled: 0.255 s, peak 8.30 GB' and 'MLX <variant>: 0.195 s
    (first call ...), peak ...' lines; each MLX variant against the reference of its kind."""
    reference, figures, cosine, size = {}, [], None, "768x512x121"
    for line in output.splitlines():
        found = re.match(r"^latent .* -> video (\d+) frames (\d+)x(\d+)", line)
        if found:
            size = f"{found[3]}x{found[2]}x{found[1]}"
        found = re.match(r"^ltx-core (\w+):\s+([\d.]+) s, peak ([\d.]+|nan) GB", line)
        if found:
            reference[found[1]] = {"median_s": float(found[2]), "peak_gb": _number(found[3])}
        found = re.match(r"^\s*cosine vs ltx-core output: ([\d.-]+)", line)
        if found:
            cosine = float(found[1])
        found = re.match(r"^MLX ((\w+)[^:]*): ([\d.]+) s \(first call [\d.]+ s\), peak ([\d.]+|nan) GB", line)
        if found and found[2] in reference:
            label, kind = found[1], found[2]
            mlx = {"median_s": float(found[3]), "peak_gb": _number(found[4])}
            ratio = mlx["median_s"] / reference[kind]["median_s"]
            figure = {"phase": f"video VAE decode, {label}", "size": size, "reference": "ltx-core", "mlx": mlx}
            figure.update(ref=reference[kind], ratio=ratio, goal=GOALS.get(phase.name, 1.0), cosine=None)
            figures.append({**figure, "timing": "min of 3 after 1 warm-up (vae_decode.py)"})
    for figure in figures:
        if figure["phase"] == "video VAE decode, untiled":  # its cosine is printed after its time
            figure["cosine"] = cosine
    return figures


PARSERS = {"transformer_step.py": parse_transformer_step, "vae_decode.py": parse_vae_decode}


def check_environment(small: bool) -> None:
    """Fail before the first phase, naming what is missing (nothing is imported here, so this
    process holds no GPU memory while the phases run)."""
    sys.path.insert(0, str(ROOT))  # as the scripts will see it (PYTHONPATH below)
    missing = [name for name in ("mlx", "torch", "ltx_core", "transformers", "LTX_2_MLX")
               if importlib.util.find_spec(name) is None]  # fmt: skip
    if missing:
        raise SystemExit(f"not importable: {', '.join(missing)} (PYTHONPATH={os.environ.get('PYTHONPATH', '')!r}); "
                         "MLX's CUDA build, ltx-core 1.0.0 and transformers are needed beside torch.")  # fmt: skip
    if not small and importlib.util.find_spec("mlx.core") is not None:
        probe = "import mlx.core as mx, torch; print(mx.default_device(), torch.cuda.is_available())"
        answer = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.strip()
        if answer != "Device(gpu, 0) True":
            raise SystemExit(f"MLX device / torch CUDA: {answer!r}; the GPU run needs both on the GPU (or --small).")


def run_phase(phase: Phase, out: Path, small: bool, env: dict, timeout_s: float) -> tuple[list[dict], str]:
    command = [sys.executable, str(HERE / phase.script), *phase.arguments, *(["--small"] if small else [])]
    json_path = out / f"{phase.name}.json"
    if phase.writes_json:
        command += ["--json", str(json_path)]
    log = out / f"{phase.name}.log"
    start = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout_s)
        output, status = done.stdout + done.stderr, "ok" if done.returncode == 0 else f"exit {done.returncode}"
    except subprocess.TimeoutExpired as expired:
        output = (expired.stdout or b"").decode() if isinstance(expired.stdout, bytes) else (expired.stdout or "")
        status = f"timed out after {timeout_s:.0f} s"
    wall = time.perf_counter() - start
    log.write_text(" ".join(command) + "\n" + output)
    figures = []
    if status == "ok":
        if phase.writes_json:
            loaded = json.loads(json_path.read_text())
            figures = loaded if isinstance(loaded, list) else [loaded]
        else:
            figures = PARSERS[phase.script](output, phase)
            write_json(str(json_path), figures)
        if not figures:
            status = "no figures found in the output"
    for figure in figures:
        figure["script_wall_s"] = wall
    tail = "" if status == "ok" else "\n    " + "\n    ".join(output.strip().splitlines()[-6:])
    print(f"[{phase.name}] {status}, {wall:.0f} s wall, log {log}{tail}", flush=True)
    return figures, status


def summary_table(rows: list[dict]) -> str:
    def seconds(side: dict) -> str:
        return f"{side['median_s']:.3f} s"

    def peak(side: dict) -> str:
        value = side.get("peak_gb")
        return "–" if value is None or value != value else f"{value:.1f} GB"

    lines = ["| phase | size | reference | MLX | MLX ÷ reference | goal | cosine | peak ref / MLX |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for row in rows:
        goal = row.get("goal")
        verdict = "" if goal is None else (" ✓" if row["ratio"] <= goal else " ✗")
        cosine = "–" if row.get("cosine") is None else f"{row['cosine']:.4f}"
        lines.append(f"| {row['phase']} | {row['size']} | {row['reference']} {seconds(row['ref'])} | "
                     f"{seconds(row['mlx'])} | {row['ratio']:.2f}{verdict} | {goal if goal is not None else '–'} | "
                     f"{cosine} | {peak(row['ref'])} / {peak(row['mlx'])} |")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="phases_out", help="folder for the logs and JSON files")
    parser.add_argument("--small", action="store_true", help="each script's --small (CPU): checks the scripts")
    parser.add_argument("--only", nargs="+", metavar="PHASE", help=f"among {[p.name for p in PHASES]}")
    parser.add_argument("--budget", type=float, default=450, help="seconds after which waiting phases are skipped")
    args = parser.parse_args()
    names = {phase.name for phase in PHASES}
    unknown = sorted(set(args.only or []) - names)
    if unknown:
        raise SystemExit(f"unknown phases {unknown}; choose among {sorted(names)}")
    check_environment(args.small)
    phases = [phase for phase in PHASES if not args.only or phase.name in args.only]
    if args.small:
        # --small ignores --size: one run of transformer_step.py per layout is enough.
        phases = [phase for phase in phases if "1216x704x121" not in phase.arguments]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))

    start, rows, statuses = time.perf_counter(), [], {}
    for phase in phases:
        left = args.budget - (time.perf_counter() - start)
        if left < 20:
            statuses[phase.name] = "skipped: out of --budget"
            print(f"[{phase.name}] skipped, {args.budget:.0f} s budget spent", flush=True)
            continue
        figures, statuses[phase.name] = run_phase(phase, out, args.small, env, min(phase.timeout_s, left))
        rows += figures
    total = time.perf_counter() - start
    write_json(str(out / "summary.json"), {"wall_s": total, "status": statuses, "figures": rows})
    table = summary_table(rows)
    (out / "summary.md").write_text(table + "\n")
    print(f"\n{table}\n\nall phases: {total:.0f} s wall; figures in {out}/", flush=True)
    if any(status != "ok" for status in statuses.values()):
        raise SystemExit(f"not every phase ran: {statuses}")


if __name__ == "__main__":
    main()
