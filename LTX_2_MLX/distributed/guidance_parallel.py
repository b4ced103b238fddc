"""Guidance-parallel denoising: each process holds the whole DiT and evaluates its share of a
guided step's passes (positive prompt, negative prompt, STG, isolated modality); one
`all_gather` per step gives every process all the predictions, and each then applies the
guiders itself, so the processes stay in step without further messages."""

import math

import mlx.core as mx


class GuidanceParallelTransformer:
    """An X0 transformer whose `evaluate_passes` spreads passes over the group: rank r takes
    passes r, r + N, r + 2N, ... A rank left without a pass in the last round sends zeros
    (the gathered block must have the same shape everywhere) and the zeros are dropped.

    A single pass (an unguided step) runs on every rank instead: sending it would cost more
    than computing it. Plain calls go straight to the wrapped transformer.
    """

    def __init__(self, transformer, group: mx.distributed.Group):
        self.transformer = transformer
        self.velocity_model = transformer.velocity_model
        self.group = group

    def __call__(self, video, audio=None, perturbations=None):
        return self.transformer(video, audio, perturbations)

    def evaluate_passes(self, passes: list) -> list[tuple[mx.array | None, mx.array | None]]:
        if len(passes) <= 1:
            return [self.transformer(video=p.video, audio=p.audio, perturbations=p.perturbations) for p in passes]
        size, rank = self.group.size(), self.group.rank()
        rounds = math.ceil(len(passes) / size)
        # A denoised latent has its noisy latent's shape and dtype (to_denoised).
        streams = (passes[0].video, passes[0].audio)
        shapes = [s.latent.shape if s is not None else None for s in streams]
        dtype = next(s.latent.dtype for s in streams if s is not None)
        width = sum(math.prod(shape) for shape in shapes if shape is not None)

        rows = []
        for round_index in range(rounds):
            index = round_index * size + rank
            if index >= len(passes):
                rows.append(mx.zeros((width,), dtype=dtype))
                continue
            p = passes[index]
            outputs = self.transformer(video=p.video, audio=p.audio, perturbations=p.perturbations)
            rows.append(mx.concatenate([o.reshape(-1).astype(dtype) for o in outputs if o is not None]))
        gathered = mx.distributed.all_gather(mx.stack(rows)[None], group=self.group)  # (N, rounds, width)
        mx.eval(gathered)

        results = []
        for index in range(len(passes)):
            row = gathered[index % size, index // size]
            outputs, offset = [], 0
            for shape in shapes:
                if shape is None:
                    outputs.append(None)
                    continue
                count = math.prod(shape)
                outputs.append(row[offset : offset + count].reshape(shape))
                offset += count
            results.append(tuple(outputs))
        return results
