"""Evaluating a model piece by piece (blocks, layers, tiles) without the GPU waiting for Python."""

import mlx.core as mx


class OneAhead:
    """Each piece is queued (mx.async_eval) before the previous one is waited for: the GPU runs
    piece i while Python builds piece i+1, and at most two pieces' intermediates are alive
    (evaluating everything at the end holds them all; evaluating each piece synchronously leaves
    the GPU idle while the next is built)."""

    def __init__(self):
        self._waiting: list[mx.array] = []

    def queue(self, outputs: list[mx.array], wait_on: list[mx.array] | None = None) -> None:
        """Queue `outputs`, then wait for the previous piece. `wait_on`: what marks this piece
        done when `outputs` are accumulators that later pieces update in place."""
        mx.async_eval(outputs)
        mx.eval(self._waiting)
        self._waiting = outputs if wait_on is None else wait_on

    def finish(self) -> None:
        """Wait for the last piece queued."""
        mx.eval(self._waiting)
        self._waiting = []
