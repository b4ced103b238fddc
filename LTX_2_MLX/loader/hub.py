"""Model files on the Hugging Face Hub, and the default model `ltx2-mlx generate` uses.

`resolve_default_model` finds DEFAULT_MODEL's files in the Hugging Face cache without touching
the network when they are all there. Otherwise it asks the Hub for the sizes of exactly the
missing files, prints one line saying how many GB it will fetch, and downloads them with
huggingface_hub (progress bars; an interrupted download picks up again on the next run).
`scripts/download_weights.py` fetches the same files, or any in the tables below, ahead of time.
Every failure is a HubError whose one line names the fix.
"""

import contextlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import click
import huggingface_hub
from huggingface_hub import constants
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
)
from huggingface_hub.utils import filter_repo_objects


class HubError(ValueError):
    """Model files that cannot be had from the Hub or the cache; the message names the fix."""


@dataclass(frozen=True)
class HubFile:
    """One file of a Hub model repository."""

    repo: str
    filename: str

    @property
    def name(self) -> str:
        return self.filename


@dataclass(frozen=True)
class HubFolder:
    """A transformers model folder: the files of a Hub repository matching `allow_patterns`.
    It is complete when config.json, every weight shard and a tokenizer are there."""

    repo: str
    allow_patterns: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.repo


HubItem = HubFile | HubFolder

LTX_2 = "Lightricks/LTX-2"
LTX_2_3 = "Lightricks/LTX-2.3"
LTX_2_3_FP8 = "Lightricks/LTX-2.3-fp8"

# The files Lightricks publishes (github.com/Lightricks/LTX-2 README, "Full Model List").
# Each checkpoint is one file: DiT, video and audio VAEs, vocoder, text connectors, config.
CHECKPOINTS = {
    "ltx-2-dev": HubFile(LTX_2, "ltx-2-19b-dev.safetensors"),
    "ltx-2-dev-fp8": HubFile(LTX_2, "ltx-2-19b-dev-fp8.safetensors"),
    "ltx-2-distilled": HubFile(LTX_2, "ltx-2-19b-distilled.safetensors"),
    "ltx-2-distilled-fp8": HubFile(LTX_2, "ltx-2-19b-distilled-fp8.safetensors"),
    "ltx-2.3-dev": HubFile(LTX_2_3, "ltx-2.3-22b-dev.safetensors"),
    "ltx-2.3-dev-fp8": HubFile(LTX_2_3_FP8, "ltx-2.3-22b-dev-fp8.safetensors"),
    "ltx-2.3-distilled": HubFile(LTX_2_3, "ltx-2.3-22b-distilled-1.1.safetensors"),
    "ltx-2.3-distilled-fp8": HubFile(LTX_2_3_FP8, "ltx-2.3-22b-distilled-fp8.safetensors"),
}
UPSCALERS = {
    "spatial-x2": HubFile(LTX_2, "ltx-2-spatial-upscaler-x2-1.0.safetensors"),
    "temporal-x2": HubFile(LTX_2, "ltx-2-temporal-upscaler-x2-1.0.safetensors"),
    "ltx-2.3-spatial-x2": HubFile(LTX_2_3, "ltx-2.3-spatial-upscaler-x2-1.1.safetensors"),
    "ltx-2.3-spatial-x1.5": HubFile(LTX_2_3, "ltx-2.3-spatial-upscaler-x1.5-1.0.safetensors"),
    "ltx-2.3-temporal-x2": HubFile(LTX_2_3, "ltx-2.3-temporal-upscaler-x2-1.0.safetensors"),
}
# IC-LoRAs (`--pipeline ic-lora --lora`), one repository each. The same README's "LoRAs" list
# names Union Control and Motion Track Control for LTX-2.3 and Detailer and Pose Control for
# LTX-2; Canny and Depth Control are the other IC-LoRAs Lightricks publishes for LTX-2
# (huggingface.co/models?other=base_model:finetune:Lightricks/LTX-2), named as the Pose one is.
IC_LORAS = {
    "ltx-2.3-ic-lora-union-control": HubFile(
        "Lightricks/LTX-2.3-22b-IC-LoRA-Union-Control", "ltx-2.3-22b-ic-lora-union-control-ref0.5.safetensors"
    ),
    "ltx-2.3-ic-lora-motion-track-control": HubFile(
        "Lightricks/LTX-2.3-22b-IC-LoRA-Motion-Track-Control",
        "ltx-2.3-22b-ic-lora-motion-track-control-ref0.5.safetensors",
    ),
    "ltx-2-ic-lora-canny-control": HubFile(
        "Lightricks/LTX-2-19b-IC-LoRA-Canny-Control", "ltx-2-19b-ic-lora-canny-control.safetensors"
    ),
    "ltx-2-ic-lora-depth-control": HubFile(
        "Lightricks/LTX-2-19b-IC-LoRA-Depth-Control", "ltx-2-19b-ic-lora-depth-control.safetensors"
    ),
    "ltx-2-ic-lora-detailer": HubFile(
        "Lightricks/LTX-2-19b-IC-LoRA-Detailer", "ltx-2-19b-ic-lora-detailer.safetensors"
    ),
    "ltx-2-ic-lora-pose-control": HubFile(
        "Lightricks/LTX-2-19b-IC-LoRA-Pose-Control", "ltx-2-19b-ic-lora-pose-control.safetensors"
    ),
}
LORAS = {
    "ltx-2-distilled-lora": HubFile(LTX_2, "ltx-2-19b-distilled-lora-384.safetensors"),
    "ltx-2.3-distilled-lora": HubFile(LTX_2_3, "ltx-2.3-22b-distilled-lora-384-1.1.safetensors"),
    **IC_LORAS,
}
GEMMA_FILES = ("*.json", "*.safetensors", "tokenizer.model")
# Both gated by Google's Gemma licence. Lightricks' docs point at the QAT one (bf16 weights
# trained to survive 4-bit quantization, which suits --text-encoder-bits 4).
GEMMAS = {
    "gemma-3-12b-it-qat": HubFolder("google/gemma-3-12b-it-qat-q4_0-unquantized", GEMMA_FILES),
    "gemma-3-12b-it": HubFolder("google/gemma-3-12b-it", GEMMA_FILES),
}


@dataclass(frozen=True)
class DefaultModel:
    """What `generate` runs when given no checkpoint: the newest generation's distilled
    checkpoint in its smallest published precision, its ×2 spatial upscaler, and Gemma."""

    checkpoint: HubFile
    spatial_upscaler: HubFile
    gemma: HubFolder
    pipeline: str
    generation: str  # the LTX generation ("2.3": the 22B DiT) whose LoRAs fit it


DEFAULT_MODEL = DefaultModel(
    checkpoint=CHECKPOINTS["ltx-2.3-distilled-fp8"],
    spatial_upscaler=UPSCALERS["ltx-2.3-spatial-x2"],
    gemma=GEMMAS["gemma-3-12b-it-qat"],
    pipeline="distilled",
    generation="2.3",
)


@dataclass(frozen=True)
class Extra:
    """A file some pipelines take beside the checkpoint, offered by a short name: it fits the
    checkpoints of one LTX generation ("2.3": 22B, "2": 19B)."""

    file: HubFile
    generation: str
    used_for: str


EXTRAS = {
    "distilled-lora": Extra(LORAS["ltx-2.3-distilled-lora"], "2.3",
                            "stage 2 of two-stage, two-stage-hq, keyframes, a2vid (--distilled-lora)"),
    "spatial-upscaler-x1.5": Extra(UPSCALERS["ltx-2.3-spatial-x1.5"], "2.3",
                                   "latent x1.5, from Python (load_upscaler)"),
    "ic-lora-union": Extra(IC_LORAS["ltx-2.3-ic-lora-union-control"], "2.3",
                           "--pipeline ic-lora following depth, pose or edge videos"),
    "ic-lora-motion-track": Extra(IC_LORAS["ltx-2.3-ic-lora-motion-track-control"], "2.3",
                                  "--pipeline ic-lora following motion tracks"),
    "ic-lora-canny": Extra(IC_LORAS["ltx-2-ic-lora-canny-control"], "2", "--pipeline ic-lora following edge videos"),
    "ic-lora-depth": Extra(IC_LORAS["ltx-2-ic-lora-depth-control"], "2", "--pipeline ic-lora following depth videos"),
    "ic-lora-detailer": Extra(IC_LORAS["ltx-2-ic-lora-detailer"], "2", "--pipeline ic-lora adding detail to a video"),
    "ic-lora-pose": Extra(IC_LORAS["ltx-2-ic-lora-pose-control"], "2", "--pipeline ic-lora following pose videos"),
}  # fmt: skip
# What fits the default model: `download_weights.py --all` fetches these beside it.
DEFAULT_EXTRAS = tuple(name for name, extra in EXTRAS.items() if extra.generation == DEFAULT_MODEL.generation)


@dataclass(frozen=True)
class DefaultFiles:
    checkpoint_path: Path
    spatial_upscaler_path: Path
    gemma_path: Path | None


def resolve_default_model(
    need_gemma: bool, download: bool = True, echo: Callable[[str], None] = click.echo
) -> DefaultFiles:
    """Local paths of DEFAULT_MODEL's files (Gemma only if `need_gemma`), from the Hugging Face
    cache, fetching what is missing unless `download` is False."""
    items: list[HubItem] = [DEFAULT_MODEL.checkpoint, DEFAULT_MODEL.spatial_upscaler]
    if need_gemma:
        items.append(DEFAULT_MODEL.gemma)
    paths = fetch(items, download, echo)
    return DefaultFiles(paths[0], paths[1], paths[2] if need_gemma else None)


def hub_cache_dir() -> Path:
    """Where huggingface_hub keeps downloads (HF_HUB_CACHE, by default ~/.cache/huggingface/hub)."""
    return Path(os.environ.get("HF_HUB_CACHE") or constants.HF_HUB_CACHE).expanduser()


def cached_path(item: HubItem, cache_dir: Path | None = None) -> Path | None:
    """The item's path in the cache (a file, or a complete model folder), or None; offline."""
    cache_dir = cache_dir or hub_cache_dir()
    if isinstance(item, HubFile):
        return _cached_file(item.repo, item.filename, cache_dir)
    config = _cached_file(item.repo, "config.json", cache_dir)
    if config is None:
        return None
    folder = config.parent
    index = folder / "model.safetensors.index.json"
    try:
        shards = set(json.loads(index.read_text())["weight_map"].values()) if index.is_file() else {"model.safetensors"}
    except (json.JSONDecodeError, KeyError, AttributeError):
        return None
    has_tokenizer = any((folder / name).is_file() for name in ("tokenizer.json", "tokenizer.model"))
    return folder if has_tokenizer and all((folder / shard).is_file() for shard in shards) else None


def fetch(items: Sequence[HubItem], download: bool = True, echo: Callable[[str], None] = click.echo) -> list[Path]:
    """The local paths of `items`: from the cache when there, else downloaded into it (after
    one line saying how many GB that is). Raises HubError."""
    cache_dir = hub_cache_dir()
    found = [cached_path(item, cache_dir) for item in items]
    missing = [item for item, path in zip(items, found) if path is None]
    if not missing:
        return found
    names, local = ", ".join(item.name for item in missing), _local_files_hint(missing)
    if not download:
        raise HubError(
            f"not in the Hugging Face cache ({_shown(cache_dir)}): {names}; `python scripts/download_weights.py "
            f"--default` fetches them, or {local}."
        )
    if _offline():
        raise HubError(
            f"HF_HUB_OFFLINE is set and {names} {'is' if len(missing) == 1 else 'are'} not in the Hugging Face cache "
            f"({_shown(cache_dir)}): unset it and run again, or {local}."
        )
    with _quiet_hub_logs():
        to_fetch = {}
        for item in missing:
            with _as_hub_error(item.repo, names, local):
                to_fetch[item] = _bytes_to_fetch(item, cache_dir)
        total = sum(sum(sizes.values()) for sizes in to_fetch.values())
        free = shutil.disk_usage(_existing_ancestor(cache_dir)).free
        if total > free:
            raise HubError(
                f"{names} need {_gb(total)} but {_shown(cache_dir)} has {_gb(free)} free: free some space, "
                f"or set HF_HUB_CACHE to a disk with room (or {local})."
            )
        echo(
            f"fetching {_gb(total)} into the Hugging Face cache ({_shown(cache_dir)}): "
            + ", ".join(_described(item, sizes) for item, sizes in to_fetch.items())
        )
        for item in missing:
            with _as_hub_error(item.repo, names, local):
                if isinstance(item, HubFile):
                    huggingface_hub.hf_hub_download(item.repo, item.filename, cache_dir=cache_dir)
                else:
                    huggingface_hub.snapshot_download(
                        item.repo, allow_patterns=list(item.allow_patterns), cache_dir=cache_dir
                    )
    paths = [path or cached_path(item, cache_dir) for item, path in zip(items, found)]
    incomplete = [item.name for item, path in zip(items, paths) if path is None]
    if incomplete:
        raise HubError(f"{', '.join(incomplete)}: still incomplete after downloading; run again to resume.")
    return paths


def _cached_file(repo: str, filename: str, cache_dir: Path, revision: str | None = None) -> Path | None:
    path = huggingface_hub.try_to_load_from_cache(repo, filename, cache_dir=cache_dir, revision=revision)
    return Path(path) if isinstance(path, str) else None


def _bytes_to_fetch(item: HubItem, cache_dir: Path) -> dict[str, int]:
    """The item's files not yet in the cache -> bytes still to download (one Hub request,
    plus an access check for gated repositories)."""
    info = huggingface_hub.HfApi().model_info(item.repo, files_metadata=True, timeout=constants.HF_HUB_ETAG_TIMEOUT)
    if getattr(info, "gated", False):
        if huggingface_hub.get_token() is None:
            raise HubError(
                f"{item.repo} is gated and you are not logged in to Hugging Face: accept the licence at "
                f"https://huggingface.co/{item.repo}, then `hf auth login` (a Read token) and run again."
            )
        huggingface_hub.HfApi().auth_check(item.repo)
    if isinstance(item, HubFile):
        files = [sibling for sibling in info.siblings if sibling.rfilename == item.filename]
        if not files:
            raise HubError(
                f"{item.repo} no longer has {item.filename}: update LTX-2-MLX, or download the file yourself "
                f"and {_local_files_hint([item])}."
            )
    else:
        files = filter_repo_objects(info.siblings, allow_patterns=item.allow_patterns, key=lambda s: s.rfilename)
        files = [
            sibling for sibling in files if _cached_file(item.repo, sibling.rfilename, cache_dir, info.sha) is None
        ]
    return {sibling.rfilename: _bytes_left(item.repo, sibling, cache_dir) for sibling in files}


def _bytes_left(repo: str, sibling, cache_dir: Path) -> int:
    """A file's size less what the cache already holds of it: its blob (shared with another
    revision) or the partial `.incomplete` blob an interrupted download left."""
    size = sibling.size or 0
    blob_name = sibling.lfs.sha256 if sibling.lfs else sibling.blob_id
    if not blob_name:
        return size
    blob = cache_dir / f"models--{repo.replace('/', '--')}" / "blobs" / blob_name
    if blob.is_file():
        return 0
    partial = blob.with_name(f"{blob_name}.incomplete")
    return max(size - partial.stat().st_size, 0) if partial.is_file() else size


def _described(item: HubItem, sizes: dict[str, int]) -> str:
    if isinstance(item, HubFile):
        return f"{item.filename} ({_gb(sum(sizes.values()))})"
    return f"{item.repo} ({_gb(sum(sizes.values()))} in {len(sizes)} file{'' if len(sizes) == 1 else 's'})"


def _connection_errors() -> tuple[type[Exception], ...]:
    """What huggingface_hub raises when the Hub cannot be reached (requests before 1.0, httpx after)."""
    errors: list[type[Exception]] = [LocalEntryNotFoundError, OfflineModeIsEnabled]
    with contextlib.suppress(ImportError):
        import requests

        errors += [requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError]
    with contextlib.suppress(ImportError):
        import httpx

        errors.append(httpx.TransportError)
    return tuple(errors)


def _local_files_hint(missing: Sequence[HubItem]) -> str:
    """How to do without the Hub: the options that take local copies of the missing files."""
    if all(item in LORAS.values() for item in missing):
        return "pass a local copy to --lora/--distilled-lora"
    return "pass --checkpoint-path/--gemma-path to local files"


@contextlib.contextmanager
def _as_hub_error(repo: str, names: str, local: str) -> Iterator[None]:
    """Turn huggingface_hub's exceptions into one-line HubErrors; `local` says how to do
    without the Hub."""
    try:
        yield
    except GatedRepoError:
        raise HubError(
            f"{repo} is gated and your Hugging Face account has no access: accept the licence at "
            f"https://huggingface.co/{repo}, then `hf auth login` with that account's Read token and run again."
        ) from None
    except RepositoryNotFoundError:
        raise HubError(
            f"the Hub does not show {repo} to you (renamed, or your token is refused): `hf auth login` again, "
            f"or {local}."
        ) from None
    except _connection_errors():
        raise HubError(
            f"cannot reach huggingface.co to fetch {names}: connect and run again, or {local}; "
            "`python scripts/download_weights.py` fetches them ahead."
        ) from None
    except HfHubHTTPError as err:
        status = getattr(getattr(err, "response", None), "status_code", None)
        raise HubError(f"the Hub failed to serve {repo} (HTTP {status}): try again later, or {local}.") from None


@contextlib.contextmanager
def _quiet_hub_logs() -> Iterator[None]:
    """huggingface_hub logs each retry of a failed request as a multi-line warning; the failure
    is reported once, as a HubError, so its warnings are silenced meanwhile (progress bars stay)."""
    logger = logging.getLogger("huggingface_hub")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _offline() -> bool:
    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}


def _existing_ancestor(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _gb(size: int) -> str:
    return f"{size / 1e9:.1f} GB"


def _shown(path: Path) -> str:
    home = Path.home()
    return f"~/{path.relative_to(home)}" if path.is_relative_to(home) else str(path)
