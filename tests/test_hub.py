"""The default model's files: found in the Hugging Face cache without network, fetched with a
size line first, and every Hub failure turned into one HubError line naming the fix; and
scripts/download_weights.py's extras (the LTX-2.3 distilled LoRA, the IC-LoRAs, the x1.5
upscaler) fetched the same way. Offline: the Hub is replaced by fakes, the cache is a tmp dir in
huggingface_hub's own layout."""

import hashlib
import importlib.util
import json
import logging
import os
import socket
import subprocess
import sys
from collections import namedtuple
from pathlib import Path
from types import SimpleNamespace

import huggingface_hub
import pytest
import requests
from click.testing import CliRunner
from huggingface_hub import constants
from huggingface_hub.errors import GatedRepoError, LocalEntryNotFoundError
from huggingface_hub.hf_api import BlobLfsInfo, RepoSibling

from LTX_2_MLX.cli.runner import run_cli
from LTX_2_MLX.loader import hub
from LTX_2_MLX.loader.hub import DEFAULT_EXTRAS, DEFAULT_MODEL, EXTRAS, HubError, resolve_default_model

DOWNLOAD_SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "download_weights.py"

COMMIT = "0123456789abcdef0123456789abcdef01234567"
CHECKPOINT, UPSCALER, GEMMA = DEFAULT_MODEL.checkpoint, DEFAULT_MODEL.spatial_upscaler, DEFAULT_MODEL.gemma
GEMMA_SHARDS = ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors")
# Sizes the fake Hub reports (the real files' sizes, Gemma's made up).
HUB_SIZES = {
    CHECKPOINT.filename: 29_531_884_062,
    UPSCALER.filename: 995_743_560,
    "config.json": 1_000,
    "model.safetensors.index.json": 50_000,
    "tokenizer.json": 33_000_000,
    GEMMA_SHARDS[0]: 12_000_000_000,
    GEMMA_SHARDS[1]: 12_000_000_000,
}
GEMMA_FILES = ("config.json", "model.safetensors.index.json", "tokenizer.json", *GEMMA_SHARDS)
EXTRA_SIZE = 300_000_000  # what the fake Hub reports for an extra (a LoRA, an upscaler)


def blob_name(repo: str, filename: str) -> str:
    return hashlib.sha256(f"{repo}/{filename}".encode()).hexdigest()


def put_in_cache(cache: Path, repo: str, filename: str, content: bytes = b"weights") -> Path:
    """A file as huggingface_hub stores it: blobs/<hash>, snapshots/<commit>/<file> linking to
    it, refs/main naming the commit."""
    repo_dir = cache / f"models--{repo.replace('/', '--')}"
    blob = repo_dir / "blobs" / blob_name(repo, filename)
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(content)
    snapshot_file = repo_dir / "snapshots" / COMMIT / filename
    snapshot_file.parent.mkdir(parents=True, exist_ok=True)
    if not snapshot_file.is_symlink():
        snapshot_file.symlink_to(Path("../..") / "blobs" / blob.name)
    (repo_dir / "refs").mkdir(exist_ok=True)
    (repo_dir / "refs" / "main").write_text(COMMIT)
    return snapshot_file


def put_gemma_in_cache(cache: Path, files=GEMMA_FILES) -> Path:
    index = json.dumps({"weight_map": {"a.weight": GEMMA_SHARDS[0], "b.weight": GEMMA_SHARDS[1]}}).encode()
    for filename in files:
        put_in_cache(cache, GEMMA.repo, filename, index if filename == "model.safetensors.index.json" else b"{}")
    return cache / f"models--{GEMMA.repo.replace('/', '--')}" / "snapshots" / COMMIT


def fail(*args, **kwargs):
    raise AssertionError(f"the Hub was called: {args} {kwargs}")


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """An empty Hugging Face cache (HF_HUB_CACHE), online mode, plenty of disk, and no network
    unless a test puts a fake Hub in place."""
    cache = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub.shutil, "disk_usage", lambda path: namedtuple("Usage", "total used free")(0, 0, 10**13))
    monkeypatch.setattr(socket.socket, "connect", fail)
    for name in ("hf_hub_download", "snapshot_download"):
        monkeypatch.setattr(huggingface_hub, name, fail)
    for name in ("model_info", "auth_check", "get_paths_info"):
        monkeypatch.setattr(huggingface_hub.HfApi, name, fail)
    return cache


class FakeHub:
    """model_info answers with HUB_SIZES (Gemma gated if `gated`); downloads write into the
    cache. Every call and echoed line is recorded in order in `events`."""

    def __init__(self, cache: Path, monkeypatch, gated: bool = False):
        self.cache, self.gated, self.events = cache, gated, []
        monkeypatch.setattr(huggingface_hub.HfApi, "model_info", self.model_info)
        monkeypatch.setattr(huggingface_hub.HfApi, "auth_check", lambda api, repo: self.events.append(("auth", repo)))
        monkeypatch.setattr(huggingface_hub, "hf_hub_download", self.hf_hub_download)
        monkeypatch.setattr(huggingface_hub, "snapshot_download", self.snapshot_download)

    def echo(self, line: str) -> None:
        self.events.append(("echo", line))

    def model_info(self, repo, files_metadata=False, timeout=None):  # set on HfApi as a bound method: no `api`
        self.events.append(("model_info", repo))
        files = (CHECKPOINT, UPSCALER, *(extra.file for extra in EXTRAS.values()))
        names = GEMMA_FILES if repo == GEMMA.repo else [f.filename for f in files if f.repo == repo]
        sizes = {name: HUB_SIZES.get(name, EXTRA_SIZE) for name in names}
        siblings = [
            RepoSibling(name, size=size, lfs=BlobLfsInfo(size, blob_name(repo, name), 135))
            for name, size in sizes.items()
        ]
        siblings.append(RepoSibling("README.md", size=5_000, blob_id="a git blob id"))  # no LFS; no pattern takes it
        return SimpleNamespace(
            sha=COMMIT, gated="manual" if self.gated and repo == GEMMA.repo else False, siblings=siblings
        )

    def hf_hub_download(self, repo, filename, cache_dir):
        self.events.append(("download", filename))
        return str(put_in_cache(Path(cache_dir), repo, filename))

    def snapshot_download(self, repo, allow_patterns, cache_dir):
        self.events.append(("download", repo))
        return str(put_gemma_in_cache(Path(cache_dir)))


def test_default_model_comes_from_the_cache_without_network(cache):
    checkpoint = put_in_cache(cache, CHECKPOINT.repo, CHECKPOINT.filename)
    upscaler = put_in_cache(cache, UPSCALER.repo, UPSCALER.filename)
    gemma = put_gemma_in_cache(cache)

    files = resolve_default_model(need_gemma=True, echo=fail)
    assert (files.checkpoint_path, files.spatial_upscaler_path, files.gemma_path) == (checkpoint, upscaler, gemma)
    assert files.checkpoint_path.read_bytes() == b"weights"
    assert resolve_default_model(need_gemma=False, echo=fail).gemma_path is None


def test_without_gemma_a_missing_gemma_is_not_looked_for(cache):
    put_in_cache(cache, CHECKPOINT.repo, CHECKPOINT.filename)
    put_in_cache(cache, UPSCALER.repo, UPSCALER.filename)
    put_gemma_in_cache(cache, files=GEMMA_FILES[:-1])  # a shard short: incomplete

    assert resolve_default_model(need_gemma=False, echo=fail).gemma_path is None
    with pytest.raises(HubError, match="gemma-3-12b-it-qat-q4_0-unquantized"):
        resolve_default_model(need_gemma=True, download=False, echo=fail)


def test_missing_files_with_hf_hub_offline_set_name_the_fix(cache, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    put_in_cache(cache, UPSCALER.repo, UPSCALER.filename)
    with pytest.raises(HubError) as error:
        resolve_default_model(need_gemma=False, echo=fail)
    message = str(error.value)
    assert "HF_HUB_OFFLINE is set" in message and CHECKPOINT.filename in message
    assert UPSCALER.filename not in message and "--checkpoint-path" in message and "\n" not in message


def test_not_downloading_names_the_download_script(cache):
    with pytest.raises(HubError, match=r"scripts/download_weights.py --default"):
        resolve_default_model(need_gemma=True, download=False, echo=fail)


def unreachable_api(api, *args, **kwargs):
    raise requests.ConnectionError("Failed to resolve 'huggingface.co'")


def unreachable_download(*args, **kwargs):
    raise LocalEntryNotFoundError("An error happened while trying to locate the file on the Hub")


@pytest.mark.parametrize("where", ["size query", "download"])
def test_an_unreachable_hub_gives_the_offline_message(cache, monkeypatch, where):
    fake = FakeHub(cache, monkeypatch)
    if where == "size query":
        monkeypatch.setattr(huggingface_hub.HfApi, "model_info", unreachable_api)
    else:
        monkeypatch.setattr(huggingface_hub, "hf_hub_download", unreachable_download)
    with pytest.raises(HubError) as error:
        resolve_default_model(need_gemma=False, echo=fake.echo)
    message = str(error.value)
    assert message.startswith("cannot reach huggingface.co to fetch ltx-2.3-22b-distilled-fp8.safetensors")
    assert "connect and run again" in message and "--checkpoint-path/--gemma-path" in message
    assert "`python scripts/download_weights.py` fetches them ahead" in message and "\n" not in message


def test_retry_warnings_of_huggingface_hub_are_silenced(cache, monkeypatch, caplog):
    fake = FakeHub(cache, monkeypatch)

    def retrying_download(*args, **kwargs):
        logging.getLogger("huggingface_hub.utils._http").warning("'(MaxRetryError(...))' thrown\nRetrying in 1s")
        unreachable_download()

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", retrying_download)
    level = logging.getLogger("huggingface_hub").level
    with caplog.at_level(logging.WARNING), pytest.raises(HubError, match="cannot reach"):
        resolve_default_model(need_gemma=False, echo=fake.echo)
    assert not [record for record in caplog.records if record.name.startswith("huggingface_hub")]
    assert logging.getLogger("huggingface_hub").level == level


def test_gated_gemma_without_login_names_the_licence_before_any_download(cache, monkeypatch):
    fake = FakeHub(cache, monkeypatch, gated=True)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    with pytest.raises(HubError) as error:
        resolve_default_model(need_gemma=True, echo=fake.echo)
    message = str(error.value)
    assert "not logged in" in message and "`hf auth login`" in message
    assert f"accept the licence at https://huggingface.co/{GEMMA.repo}" in message
    assert not [event for event in fake.events if event[0] in ("echo", "download")]


@pytest.mark.parametrize("where", ["access check", "download"])
def test_a_gated_repo_error_gives_the_licence_message(cache, monkeypatch, where):
    fake = FakeHub(cache, monkeypatch, gated=where == "access check")
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_token")

    def gated(*args, **kwargs):
        forbidden = SimpleNamespace(status_code=403, headers={}, request=None)
        raise GatedRepoError(f"Access to model {GEMMA.repo} is restricted.", response=forbidden)

    monkeypatch.setattr(
        *((huggingface_hub.HfApi, "auth_check") if where == "access check" else (huggingface_hub, "snapshot_download")),
        gated,
    )
    with pytest.raises(HubError) as error:
        resolve_default_model(need_gemma=True, echo=fake.echo)
    message = str(error.value)
    assert message.startswith(f"{GEMMA.repo} is gated") and "\n" not in message
    assert f"accept the licence at https://huggingface.co/{GEMMA.repo}, then `hf auth login`" in message
    if where == "access check":
        assert not [event for event in fake.events if event[0] in ("echo", "download")]


def test_too_little_disk_is_refused_before_downloading(cache, monkeypatch):
    fake = FakeHub(cache, monkeypatch)
    monkeypatch.setattr(hub.shutil, "disk_usage", lambda path: namedtuple("Usage", "total used free")(0, 0, 20 * 10**9))
    with pytest.raises(HubError) as error:
        resolve_default_model(need_gemma=True, echo=fake.echo)
    message = str(error.value)
    assert "need 54.6 GB" in message and "20.0 GB free" in message and "HF_HUB_CACHE" in message
    assert not [event for event in fake.events if event[0] in ("echo", "download")]


def test_the_size_line_comes_before_any_download_and_counts_only_missing_files(cache, monkeypatch):
    fake = FakeHub(cache, monkeypatch)
    upscaler = put_in_cache(cache, UPSCALER.repo, UPSCALER.filename)
    put_gemma_in_cache(cache, files=GEMMA_FILES[:-1])  # the second shard is missing

    files = resolve_default_model(need_gemma=True, echo=fake.echo)
    assert fake.events[0] == ("model_info", CHECKPOINT.repo)
    kinds = [kind for kind, _ in fake.events]
    assert kinds.index("echo") < kinds.index("download") and kinds.count("echo") == 1
    line = dict(fake.events)["echo"]
    assert line == (
        f"fetching 41.5 GB into the Hugging Face cache ({hub._shown(cache)}): "
        f"{CHECKPOINT.filename} (29.5 GB), {GEMMA.repo} (12.0 GB in 1 file)"
    )
    assert ("download", UPSCALER.filename) not in fake.events
    assert files.spatial_upscaler_path == upscaler and files.checkpoint_path.name == CHECKPOINT.filename
    assert (files.gemma_path / GEMMA_SHARDS[1]).is_file()


def test_an_interrupted_download_counts_only_the_bytes_left(cache, monkeypatch):
    fake = FakeHub(cache, monkeypatch)
    put_in_cache(cache, UPSCALER.repo, UPSCALER.filename)
    partial = cache / f"models--{CHECKPOINT.repo.replace('/', '--')}" / "blobs"
    partial.mkdir(parents=True)
    with open(partial / f"{blob_name(CHECKPOINT.repo, CHECKPOINT.filename)}.incomplete", "wb") as f:
        f.truncate(20_000_000_000)  # sparse: 20 GB already fetched

    resolve_default_model(need_gemma=False, echo=fake.echo)
    assert f"{CHECKPOINT.filename} (9.5 GB)" in dict(fake.events)["echo"]


@pytest.fixture(scope="module")
def download_script():
    spec = importlib.util.spec_from_file_location("download_weights", DOWNLOAD_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fetched(fake: FakeHub) -> list[str]:
    return [name for kind, name in fake.events if kind == "download"]


def test_what_fetches_the_named_extras_and_prints_where_they_are(cache, monkeypatch, download_script, tmp_path):
    fake = FakeHub(cache, monkeypatch)
    wanted = [EXTRAS["distilled-lora"].file, EXTRAS["ic-lora-union"].file, EXTRAS["ic-lora-pose"].file]
    dest = tmp_path / "weights"
    args = ["--what", "distilled-lora", "--what", "ic-lora-union", "--what", "ic-lora-pose", "--dest", str(dest)]
    result = CliRunner().invoke(download_script.main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert _fetched(fake) == [file.filename for file in wanted]
    size_line, *printed = result.output.splitlines()
    assert size_line.startswith("fetching 0.9 GB into the Hugging Face cache") and wanted[1].filename in size_line
    assert printed == [f"{file.filename}: {dest / file.filename}" for file in wanted]
    for file in wanted:
        assert (dest / file.filename).resolve() == hub.cached_path(file, cache).resolve()
    assert EXTRAS["distilled-lora"].file == hub.LORAS["ltx-2.3-distilled-lora"]
    assert wanted[2].repo == "Lightricks/LTX-2-19b-IC-LoRA-Pose-Control"


def test_all_is_the_default_model_and_every_extra_that_fits_it(cache, monkeypatch, download_script):
    """--all adds the LTX-2.3 distilled LoRA, the x1.5 upscaler and the LTX-2.3 IC-LoRAs to the
    default model (already cached here), and none of LTX-2's 19B IC-LoRAs."""
    put_in_cache(cache, CHECKPOINT.repo, CHECKPOINT.filename)
    put_in_cache(cache, UPSCALER.repo, UPSCALER.filename)
    put_gemma_in_cache(cache)
    fake = FakeHub(cache, monkeypatch)
    result = CliRunner().invoke(download_script.main, ["--all"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert set(DEFAULT_EXTRAS) == {"distilled-lora", "spatial-upscaler-x1.5", "ic-lora-union", "ic-lora-motion-track"}
    assert _fetched(fake) == [EXTRAS[name].file.filename for name in DEFAULT_EXTRAS]
    assert all(name.startswith("ltx-2.3-") for name in _fetched(fake))
    printed = [line.split(":")[0] for line in result.output.splitlines()[1:]]
    assert printed == [CHECKPOINT.filename, UPSCALER.filename, GEMMA.repo, *_fetched(fake)]


def test_extras_in_the_cache_need_no_network(cache, download_script):
    lora = EXTRAS["ic-lora-motion-track"].file
    path = put_in_cache(cache, lora.repo, lora.filename)
    result = CliRunner().invoke(download_script.main, ["--what", "ic-lora-motion-track"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert result.output == f"{lora.filename}: {path}\n"


def test_an_unreachable_hub_fails_the_download_script_in_one_line(cache, monkeypatch, download_script, capsys):
    FakeHub(cache, monkeypatch)

    def retrying_download(*args, **kwargs):
        logging.getLogger("huggingface_hub.utils._http").warning("'(MaxRetryError(...))' thrown\nRetrying in 1s")
        unreachable_download()

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", retrying_download)
    code = run_cli(lambda: download_script.main.main(["--what", "ic-lora-union"], standalone_mode=False), lambda: False)
    out, err = capsys.readouterr()
    lora = EXTRAS["ic-lora-union"].file.filename
    assert code == 1 and out.startswith("fetching 0.3 GB") and "Retrying" not in out + err
    assert err == (
        f"error: cannot reach huggingface.co to fetch {lora}: connect and run again, or pass a local copy to "
        "--lora/--distilled-lora; `python scripts/download_weights.py` fetches them ahead.\n"
    )


def test_download_script_with_hf_hub_offline_says_so_in_one_line(tmp_path):
    """The script as a user runs it, offline (HF_HUB_OFFLINE): one line, exit status 1, no
    traceback and no network."""
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub")}
    run = subprocess.run(
        [sys.executable, str(DOWNLOAD_SCRIPT), "--what", "ic-lora-pose", "--what", "ic-lora-depth"],
        env=environment, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 1 and run.stdout == ""
    names = f"{EXTRAS['ic-lora-pose'].file.filename}, {EXTRAS['ic-lora-depth'].file.filename}"
    assert run.stderr == (
        f"error: HF_HUB_OFFLINE is set and {names} are not in the Hugging Face cache ({hub._shown(tmp_path / 'hub')}): "
        "unset it and run again, or pass a local copy to --lora/--distilled-lora.\n"
    )
