"""A key/value cache for batched generation that grows in blocks instead of every step.

transformers' default cache layer appends each new token with ``torch.cat``, which copies the
whole cache of the layer at every step: for a batch of 64 and prompts of a few hundred tokens,
that copying is about a fifth of a small model's generation time on a CPU. :class:`BlockLayer`
keeps a buffer with room for ``BLOCK`` more positions, writes new keys and values in place,
and hands attention a view of the filled part. The arithmetic is the same, so greedy outputs
are identical (``bench/bench_student.py`` checks it and measures the gain).

:func:`block_cache` returns ``None`` (use the model's default) for models whose cache is not
made of plain dynamic layers (sliding windows, linear attention, ...).
"""

from __future__ import annotations

import functools
from typing import Any

BLOCK = 64  # positions added to a buffer when it is full


@functools.cache
def _layer_class():
    from transformers.cache_utils import DynamicLayer

    class BlockLayer(DynamicLayer):
        """A DynamicLayer whose keys and values live in a buffer grown ``BLOCK`` positions at a time."""

        def lazy_initialization(self, key_states, value_states) -> None:
            super().lazy_initialization(key_states, value_states)
            self._k = self._v = None
            self._n = 0

        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            n, need = self._n, self._n + key_states.shape[-2]
            if self._k is None or need > self._k.shape[-2]:
                shape = list(key_states.shape)
                shape[-2] = need + BLOCK
                k, v = key_states.new_empty(shape), value_states.new_empty(shape)
                if n:
                    k[..., :n, :] = self._k[..., :n, :]
                    v[..., :n, :] = self._v[..., :n, :]
                self._k, self._v = k, v
            self._k[..., n:need, :] = key_states
            self._v[..., n:need, :] = value_states
            self._n = need
            self.keys, self.values = self._k[..., :need, :], self._v[..., :need, :]
            return self.keys, self.values

        def _adopt(self) -> None:
            """After an operation of the parent class replaced keys/values: they become the buffer."""
            if self.is_initialized and self.keys is not None and self.keys.numel():
                self._k, self._v, self._n = self.keys, self.values, self.keys.shape[-2]
            else:
                self._k = self._v = None
                self._n = 0

        def reset(self) -> None:
            super().reset()
            self._k = self._v = None
            self._n = 0

        def crop(self, tokens_to_remove: int) -> None:
            super().crop(tokens_to_remove)
            self._adopt()

        def batch_repeat_interleave(self, repeats: int) -> None:
            super().batch_repeat_interleave(repeats)
            self._adopt()

        def batch_select_indices(self, indices) -> None:
            if self._k is None:
                super().batch_select_indices(indices)
                self._adopt()
                return
            # the buffer keeps its room, so the next update writes in place
            self._k, self._v = self._k[indices, ...], self._v[indices, ...]
            self.keys, self.values = self._k[..., : self._n, :], self._v[..., : self._n, :]

        def offload(self) -> None:
            super().offload()
            self._adopt()

        def prefetch(self) -> None:
            super().prefetch()
            self._adopt()

    return BlockLayer


def block_cache(model) -> Any | None:
    """A fresh cache of :class:`BlockLayer` s for one ``generate`` call, or None when the
    model's default cache has layers of another kind."""
    try:
        from transformers.cache_utils import DynamicCache, DynamicLayer

        cache = DynamicCache(config=model.config)
    except (AttributeError, KeyError, TypeError, ValueError):  # a config it cannot describe
        return None
    if not cache.layers or any(type(layer) is not DynamicLayer for layer in cache.layers):
        return None
    cache.layers = [_layer_class()() for _ in cache.layers]
    return cache
