"""What the DiT's load builds while it waits for the disk on CUDA (Pipeline.prepare_first_builds,
Checkpoint.while_reading): every attention shape the run's forwards meet and the audio decode at
the run's latent size, all before the load returns, and the video unchanged."""

import mlx.core as mx
import pytest
from test_checkpoint_once import generate_tiny

import LTX_2_MLX.loader.checkpoint as checkpoint_module
import LTX_2_MLX.model.audio_vae as audio_vae_module
import LTX_2_MLX.model.transformer.attention as attention_module
from LTX_2_MLX.loader import staging
from LTX_2_MLX.loader.checkpoint import Checkpoint, while_reading
from LTX_2_MLX.model.transformer import LTXModel
from LTX_2_MLX.model.transformer.warm_up import AttentionShape


@pytest.mark.parametrize("pipeline", ["distilled", "one-stage"])
def test_the_dit_load_builds_what_the_run_meets_and_changes_nothing(model_files, tmp_path, monkeypatch, pipeline):
    events = []  # ("build", AttentionShape, reading) / ("attend", AttentionShape) / ("audio", shape, reading)
    reading, in_dit = [0], [False]
    read_now, build, attend = Checkpoint._read_now, AttentionShape.build, attention_module.attend
    run_blocks = LTXModel._run_blocks
    decode_audio = audio_vae_module.decode_audio

    def recording_read_now(self, *args, **kwargs):
        reading[0] += 1  # the audio decode's loads nest inside the DiT's
        try:
            return read_now(self, *args, **kwargs)
        finally:
            reading[0] -= 1

    def recording_attend(query, key, value, heads, dim_head, mask=None):
        if in_dit[0]:  # not the text connectors' attention
            events.append(("attend", AttentionShape(query.shape[1], key.shape[1], heads, dim_head), mask is None))
        return attend(query, key, value, heads, dim_head, mask)

    def dit_blocks(self, *args):
        in_dit[0] = True
        try:
            return run_blocks(self, *args)
        finally:
            in_dit[0] = False

    monkeypatch.setattr(Checkpoint, "_read_now", recording_read_now)
    monkeypatch.setattr(AttentionShape, "build", lambda self, *a: events.append(("build", self, reading[0] > 0))
                        or build(self, *a))  # fmt: skip
    monkeypatch.setattr(attention_module, "attend", recording_attend)
    monkeypatch.setattr(LTXModel, "_run_blocks", dit_blocks)
    monkeypatch.setattr(audio_vae_module, "decode_audio", lambda latent, *a: events.append(
        ("audio", latent.shape, reading[0] > 0)) or decode_audio(latent, *a))  # fmt: skip
    monkeypatch.setattr(staging, "_BUFFER_BYTES", 2**12)  # a fill per tensor or so
    outputs = {}
    for host_read in (False, True):
        monkeypatch.setattr(checkpoint_module, "_HOST_READ", host_read)
        events.clear()
        outputs[host_read] = tmp_path / f"fox-{host_read}.mp4"
        generate_tiny(model_files, outputs[host_read], pipeline)
        builds = [event for event in events if event[0] == "build"]
        audio = [event for event in events if event[0] == "audio"]
        if not host_read:  # loads are lazy: nothing waits, nothing is built ahead
            assert not builds and len(audio) == 1
            continue
        attended = {shape for kind, shape, unmasked in events if kind == "attend" and unmasked}
        assert attended and {shape for _, shape, _ in builds} == attended
        assert len(builds) == len(attended), "a shape built twice"
        assert all(during_read for _, _, during_read in builds), "built after the load, not while it read"
        first_forward = next(i for i, event in enumerate(events) if event[0] == "attend")
        assert max(i for i, event in enumerate(events) if event[0] == "build") < first_forward
        (_, warmed, during_read), (_, decoded, _) = audio
        assert warmed == decoded and during_read
    assert outputs[True].read_bytes() == outputs[False].read_bytes()


def test_while_reading_runs_its_tasks_between_groups_then_the_rest(tmp_path, monkeypatch):
    import torch
    from safetensors.torch import save_file

    path = tmp_path / "groups.safetensors"
    save_file({f"w.{i}": torch.full((64, 64), float(i)) for i in range(6)}, str(path))  # 16 KiB each
    checkpoint = Checkpoint.open(path)
    monkeypatch.setattr(checkpoint_module, "_HOST_READ", True)
    monkeypatch.setattr(staging, "_BUFFER_BYTES", 2**15)  # three fills of two
    ran = []
    copied = []
    device_copy = staging.device_copy
    monkeypatch.setattr(staging, "device_copy", lambda a: copied.append(1) or device_copy(a))
    tasks = [lambda i=i: ran.append((i, len(copied))) for i in range(5)]
    with while_reading(tasks):
        loaded = checkpoint.load_resident("w.", decode_fp8=True)
        assert [i for i, _ in ran] == [0, 1, 2]  # before group 0's wait, then while groups 1 and 2 read
        assert [copies for _, copies in ran] == [0, 2, 4]
    assert [i for i, _ in ran] == [0, 1, 2, 3, 4]  # the rest at the end of the block
    assert all(mx.array_equal(loaded[f"{i}"], mx.full((64, 64), float(i))).item() for i in range(6))
    with pytest.raises(RuntimeError), while_reading([lambda: ran.append("late")]):
        raise RuntimeError("a failed load")
    assert ran[-1] != "late" and not checkpoint_module._WHILE_READING  # dropped with the failure
    monkeypatch.setattr(checkpoint_module, "_HOST_READ", False)
    with while_reading([lambda: ran.append("lazy")]):
        checkpoint.load_resident("w.", decode_fp8=True)
    assert ran[-1] != "lazy"  # lazy loads never wait: the work is dropped


def test_without_audio_context_only_the_video_stream_is_prepared(model_files):
    from LTX_2_MLX.pipelines.base import PromptContexts
    from LTX_2_MLX.pipelines.model_ledger import ModelLedger
    from LTX_2_MLX.pipelines.registry import PIPELINES

    ledger = ModelLedger(model_files[0], dtype=mx.float32)
    pipeline = PIPELINES["distilled"](ledger)
    request = pipeline.request(prompt="a fox", height=128, width=128, num_frames=9)
    pipeline.prepare_first_builds(request, PromptContexts(mx.zeros((1, 7, 4)), None))
    built = [task.func.__self__ for task in ledger._while_loading]  # an AttentionShape, or the ledger
    # Each stage's video self and text attention (the prompt's 7 tokens as keys): no audio decode,
    # no audio attention.
    assert all(isinstance(shape, AttentionShape) for shape in built) and len(built) == 4
    assert {shape.keys for shape in built} - {shape.queries for shape in built} == {7}
