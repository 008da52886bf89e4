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
"""

from __future__ import annotations

import functools
from typing import Any

IGNORE = -100

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


@functools.cache
def trainer_class():
    """A Trainer whose loss is :func:`completion_loss` where that is the model's own loss."""
    from transformers import Trainer

    class CompletionTrainer(Trainer):
        completion_only = True  # False: the model's own forward ([train] loss = "model")

        def _completion_only(self, model) -> bool:
            return (self.completion_only and self.accelerator.num_processes == 1
                    and self.args.n_gpu <= 1
                    and model is self.model and self.label_smoother is None
                    and self.compute_loss_func is None and has_plain_head(model))

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if return_outputs or not self._completion_only(model):
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            with self.accelerator.autocast():
                return completion_loss(model, inputs, num_items_in_batch)

    return CompletionTrainer
