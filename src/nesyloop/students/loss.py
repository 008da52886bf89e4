"""The training loss on completion tokens only, with the output layer applied to those alone.

A causal LM's forward computes logits for every position, prompt and padding included, and the
loss then ignores all but the completion's. :func:`trainer_class` gives a
:class:`~transformers.Trainer` whose loss runs the model's body, keeps the hidden states whose
next token is labelled, and applies the output layer and the cross-entropy to those only: a
training step of SmolLM2-135M with LoRA is 1.43x faster on a CPU, one of the small scratch
student (2,000-token vocabulary) 1.02x (bench/bench_train_loss.py).

It is the same loss (the per-token terms are the same numbers, summed in another order), so it
is used only where that is certain: one process, and a model class whose output layer is a
plain linear map of the last hidden state (:data:`PLAIN_HEADS`: no logit soft-capping or
scaling). Anything else trains through the model's own forward, as before.

On a CPU a batch padded to its longest row pays for every padding token. There the Trainer cuts
a batch into groups of rows of similar length (:func:`length_groups`), each cut to its own
longest row, and sums their losses over the batch's token count: the same loss and gradients
(the per-token terms are the same, summed in another order) for less compute
(bench/bench_train_loss.py ``--compare split``).
"""

from __future__ import annotations

import functools
import math
from typing import Any

IGNORE = -100

# the cost of one more forward and backward of a group, in padded tokens, on a CPU: what a cut
# must save to be made (chosen with bench/bench_train_loss.py --compare split)
GROUP_OVERHEAD = 64

# model classes whose logits are exactly ``lm_head(model(...).last_hidden_state)``
PLAIN_HEADS = frozenset({"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM",
                         "Qwen3ForCausalLM"})


def causal_lm(model):
    """The causal LM inside ``model`` (a PEFT model's base, with its adapters in place)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def has_plain_head(model) -> bool:
    lm = causal_lm(model)
    return type(lm).__name__ in PLAIN_HEADS and hasattr(lm, "model") and hasattr(lm, "lm_head")


def completion_loss(model, inputs: dict[str, Any], num_items: Any = None):
    """Cross-entropy of the labelled next tokens, the output layer applied to their positions
    only. ``num_items``: the tokens the loss is averaged over (the Trainer's count across
    gradient accumulation); None: this batch's."""
    import torch.nn.functional as F

    lm = causal_lm(model)
    hidden = lm.model(input_ids=inputs["input_ids"],
                      attention_mask=inputs.get("attention_mask")).last_hidden_state
    labels = inputs["labels"][:, 1:]
    keep = labels != IGNORE
    logits = lm.lm_head(hidden[:, :-1][keep]).float()
    total = F.cross_entropy(logits, labels[keep], reduction="sum")
    count = num_items if num_items is not None else keep.sum()
    if hasattr(count, "to"):
        count = count.to(total.device)
    return total / count


def length_groups(lengths: list[int], overhead: float = GROUP_OVERHEAD) -> list[list[int]]:
    """Row indices cut into groups of similar length: the rows sorted by length (ties in batch
    order), then cut where it lowers the cost, each group costing its rows times its longest row
    plus ``overhead``. One group: no cut pays."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    best, cut = [0.0] + [math.inf] * len(order), [0] * (len(order) + 1)
    for j in range(1, len(order) + 1):
        for i in range(j):
            cost = best[i] + overhead + (j - i) * lengths[order[j - 1]]
            if cost < best[j]:
                best[j], cut[j] = cost, i
    groups, j = [], len(order)
    while j:
        groups.append(order[cut[j]:j])
        j = cut[j]
    return groups[::-1]


def split_batch(inputs: dict[str, Any], overhead: float = GROUP_OVERHEAD) -> list[dict[str, Any]]:
    """A right-padded batch as its :func:`length_groups`, each cut to its longest row; the batch
    itself when it is one group."""
    import torch

    mask = inputs.get("attention_mask")
    if mask is None or mask.dim() != 2 or len(mask) < 2:
        return [inputs]
    lengths = mask.sum(dim=1).tolist()
    groups = length_groups(lengths, overhead)
    if len(groups) == 1:
        return [inputs]
    parts = []
    for rows in groups:
        index, width = torch.tensor(rows), max(lengths[i] for i in rows)
        parts.append({k: v[index, :width] if torch.is_tensor(v) and v.dim() == 2 else v
                      for k, v in inputs.items()})
    return parts


def labelled(inputs: dict[str, Any]):
    """The tokens a causal LM's loss averages over: labelled next tokens."""
    return (inputs["labels"][:, 1:] != IGNORE).sum()


@functools.cache
def trainer_class():
    """A Trainer whose loss is :func:`completion_loss` where that is the model's own loss."""
    from transformers import Trainer

    class CompletionTrainer(Trainer):
        completion_only = True  # False: the model's own forward ([train] loss = "model")
        split = False  # cut batches into groups of similar length (split_batch)
        split_overhead = GROUP_OVERHEAD

        def _one_process(self) -> bool:
            return self.accelerator.num_processes == 1 and self.args.n_gpu <= 1

        def _completion_only(self, model) -> bool:
            return (self.completion_only and self._one_process()
                    and model is self.model and self.label_smoother is None
                    and self.compute_loss_func is None and has_plain_head(model))

        def _splits(self, model) -> bool:
            """Where the groups' losses sum to the batch's: the completion-only loss, or a
            model that takes the batch's token count (a sum over it, not a group's mean)."""
            return (self.split and self._one_process() and self.label_smoother is None
                    and self.compute_loss_func is None
                    and (self._completion_only(model) or self.model_accepts_loss_kwargs))

        def _loss(self, model, inputs, num_items):
            if not self._completion_only(model):
                return super().compute_loss(model, inputs, False, num_items)
            with self.accelerator.autocast():
                return completion_loss(model, inputs, num_items)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if return_outputs:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            parts = ([inputs] if not self._splits(model) or "labels" not in inputs
                     else split_batch(inputs, self.split_overhead))
            if len(parts) == 1:
                return self._loss(model, inputs, num_items_in_batch)
            count = num_items_in_batch if num_items_in_batch is not None else labelled(inputs)
            return sum(self._loss(model, part, count) for part in parts)

    return CompletionTrainer
