"""The ``hf`` backend: batched generation with a local transformers model (the student).

Requests are grouped by settings, sorted by prompt length (so a batch pads little), left-padded
and generated together with the kv cache (grown in blocks, :mod:`nesyloop.gen.kv`); results come
back in request order. Greedy or sampled (seeded per batch), ``n`` samples per request,
``max_tokens``, and stop strings: a sequence stops when it has produced eos or a stop string, the
batch stops when all have, and texts are cut with :func:`apply_stop`. With ``top_logprobs``
set, every returned text comes with its tokens' log-probabilities (:func:`token_logprobs`), and
``confidence`` is :class:`BaseBackend`'s, computed from them.
"""

from __future__ import annotations

import os
from collections import defaultdict
from typing import Any

from .base import (BaseBackend, Completion, GenSettings, Request, TokenLogprob, TopLogprob,
                   apply_stop)
from .kv import block_cache


class StopOnStrings:
    """A StoppingCriteria: marks a row done once its generated text contains a stop string.

    A stop string can only be completed by a token whose text holds the string's last character,
    so only rows whose newest token is one of those ("trigger" tokens, found once per
    vocabulary) are decoded; for stop strings ending in a non-ASCII character every row is."""

    def __init__(self, tokenizer, stops: tuple[str, ...], prompt_width: int):
        self.tokenizer = tokenizer
        self.stops = tuple(s for s in stops if s)
        self.prompt_width = prompt_width
        # a stop string spans at most len(s) tokens (+2 for partial bytes at the window start)
        self.window = max((len(s) for s in self.stops), default=0) + 2
        self.triggers = self._trigger_ids(tokenizer, self.stops)

    @classmethod
    def _trigger_ids(cls, tokenizer, stops: tuple[str, ...]):
        import torch

        if not stops or any(not s[-1].isascii() for s in stops):
            return None
        cache = tokenizer.__dict__.setdefault("_nesyloop_stop_triggers", {})
        if stops not in cache:  # once per tokenizer and stop strings
            last = {s[-1] for s in stops}
            texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
            cache[stops] = torch.tensor(
                [i for i, t in enumerate(texts) if any(c in t for c in last)], dtype=torch.long)
        return cache[stops]

    def __call__(self, input_ids, scores=None, **kwargs):
        import torch

        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        if input_ids.shape[1] <= self.prompt_width:
            return done
        rows = range(input_ids.shape[0])
        if self.triggers is not None:
            hit = torch.isin(input_ids[:, -1].cpu(), self.triggers)
            rows = hit.nonzero().flatten().tolist()
            if not rows:
                return done
        start = max(self.prompt_width, input_ids.shape[1] - self.window)
        tails = self.tokenizer.batch_decode(input_ids[list(rows), start:].tolist(),
                                            skip_special_tokens=True)
        for i, tail in zip(rows, tails, strict=True):
            if any(s in tail for s in self.stops):
                done[i] = True
        return done


class HFBackend(BaseBackend):
    """Generate with a local transformers causal LM (folder, ``.gguf`` file, ``smollm2`` or hub name)."""

    kind = "hf"
    supports_logprobs = True

    def __init__(
        self,
        spec_or_path: str | os.PathLike,
        batch_size: int = 32,
        prompt_style: str = "auto",
        dtype: Any = None,
        model: Any = None,
        tokenizer: Any = None,
        progress: bool = True,
        device: str | None = None,
    ):
        import torch

        from ..students.fmt import resolve_style
        from ..students.load import ensure_pad, load_student

        self.model = str(spec_or_path)
        self.batch_size = max(1, int(batch_size))
        self.drop_finished = True  # greedy batches drop finished rows (greedy_dropping)
        self.progress = progress
        if model is None or tokenizer is None:
            model, tokenizer = load_student(spec_or_path, dtype=dtype)
        ensure_pad(tokenizer, model)
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if str(model.device) != device and getattr(model, "hf_device_map", None) is None:
            model = model.to(device)
        model.eval()
        self.lm = model
        self.tokenizer = tokenizer
        self.style = resolve_style(tokenizer, prompt_style)

    # ------------------------------------------------------------------ encoding

    def encode(self, request: Request) -> list[int]:
        from ..students.fmt import build_input, build_messages, has_chat_template

        if request.prompt is not None:
            text = build_input(self.tokenizer, request.prompt, self.style)
            special = self.style != "chat"
        else:
            text = build_messages(self.tokenizer, request.message_dicts())
            special = not has_chat_template(self.tokenizer)
        return self.tokenizer(text, add_special_tokens=special)["input_ids"]

    # ------------------------------------------------------------------ generation

    def generate(self, requests: list[Request]) -> list[Completion]:
        from tqdm.auto import tqdm

        requests = list(requests)
        out: list[Completion | None] = [None] * len(requests)
        # a caller that already encoded a request (serve's prompt limit) leaves it in meta
        encoded = [r.meta.pop("input_ids", None) or self.encode(r) for r in requests]
        groups: dict[GenSettings, list[int]] = defaultdict(list)
        for i, r in enumerate(requests):
            groups[r.settings].append(i)
        batches = []
        for settings, idx in groups.items():
            idx.sort(key=lambda i: -len(encoded[i]))  # longest first: memory errors show early
            for b in range(0, len(idx), self.batch_size):
                batches.append((settings, idx[b : b + self.batch_size]))
        bar = tqdm(batches, desc="generate", unit="batch", disable=not self.progress or len(batches) < 2)
        for k, (settings, idx) in enumerate(bar):
            texts, counts, logprobs = self._generate_batch([encoded[i] for i in idx], settings, k)
            for j, i in enumerate(idx):
                out[i] = Completion(
                    texts=texts[j],
                    prompt_tokens=len(encoded[i]),
                    completion_tokens=counts[j],
                    logprobs=None if logprobs is None else logprobs[j],
                )
        return out  # type: ignore[return-value]

    def _generate_batch(
        self, prompts: list[list[int]], settings: GenSettings, batch_no: int
    ) -> tuple[list[list[str]], list[int], list[list[list[TokenLogprob]]] | None]:
        import torch
        from transformers import GenerationConfig, StoppingCriteriaList

        from ..students.load import quiet

        tok, lm = self.tokenizer, self.lm
        pad = tok.pad_token_id
        ids, mask = self._left_pad(prompts)
        width = ids.shape[1]

        sample = not settings.greedy
        n_seq = settings.n if sample else 1
        eos = _eos_ids(tok, lm)
        want_lp = settings.top_logprobs is not None
        cfg = GenerationConfig(
            max_new_tokens=settings.max_tokens,
            do_sample=sample,
            temperature=settings.temperature if sample else None,
            top_p=settings.top_p if sample else None,
            top_k=None,
            num_return_sequences=n_seq,
            pad_token_id=pad,
            eos_token_id=eos,
            use_cache=True,
            # raw logits, not the processed scores (see token_logprobs); kept for every step
            # until the batch ends: max_tokens x rows x vocab floats
            output_logits=want_lp,
            return_dict_in_generate=want_lp,
        )
        criteria = StoppingCriteriaList()
        if settings.stop:
            criteria.append(StopOnStrings(tok, settings.stop, width))
        cache = block_cache(lm)
        if cache is not None and not sample and not want_lp and self.drop_finished:
            # a model served by `nesyloop serve` ticks its scheduler after every token
            criteria.extend(getattr(lm, "tick_criteria", list)())
            with torch.inference_mode(), quiet():
                gen = greedy_dropping(lm, ids, mask, settings.max_tokens, eos, criteria, cache)
        else:
            extra = {} if cache is None else {"past_key_values": cache}
            with torch.inference_mode(), quiet(), _seeded(settings.seed, batch_no, sample, lm.device):
                res = lm.generate(
                    input_ids=ids,
                    attention_mask=mask,
                    generation_config=cfg,
                    stopping_criteria=criteria,
                    **extra,
                )
            seqs = res.sequences if want_lp else res
            gen = seqs[:, width:].tolist()
        ends = set(eos) | {pad}
        lengths = []
        for row in gen:
            n = next((t for t, x in enumerate(row) if x in ends), None)
            lengths.append(len(row) if n is None else n + (row[n] in eos))
        decoded = tok.batch_decode([row[:n] for row, n in zip(gen, lengths)], skip_special_tokens=True)
        texts = [apply_stop(t, settings.stop) for t in decoded]
        lps = (token_logprobs(tok, res.logits, gen, lengths, settings.top_logprobs)
               if want_lp else None)
        per_req_texts, per_req_counts, per_req_lps = [], [], []
        copies = 1 if sample else settings.n  # greedy: one sequence, repeated n times
        for i in range(len(prompts)):
            chunk = slice(i * n_seq, (i + 1) * n_seq)
            per_req_texts.append(texts[chunk] * copies)
            per_req_counts.append(sum(lengths[chunk]) * copies)
            if lps is not None:
                per_req_lps.append([list(x) for x in lps[chunk] * copies])
        return per_req_texts, per_req_counts, per_req_lps if want_lp else None

    def _left_pad(self, prompts: list[list[int]]):
        import torch

        pad = self.tokenizer.pad_token_id
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), pad, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, p in enumerate(prompts):
            if p:
                ids[i, width - len(p):] = torch.tensor(p)
                mask[i, width - len(p):] = 1
        return ids.to(self.lm.device), mask.to(self.lm.device)

    def close(self) -> None:
        import gc

        self.lm = None
        gc.collect()


DROP_SHARE = 0.25  # a greedy batch drops its finished rows once they are this share of it


def greedy_dropping(lm, ids, mask, max_new: int, eos: list[int], criteria,
                    cache) -> list[list[int]]:
    """Greedy decoding of a left-padded batch that drops finished rows as it goes: each row's
    generated tokens, up to the one that ended it (eos, a stop string of ``criteria``, or
    ``max_new`` tokens).

    ``generate`` keeps every row of a batch until the longest answer ends, finished rows
    decoding padding; on the main job's predictions rows use about two thirds of the steps.
    Here, once the finished rows are ``DROP_SHARE`` of the batch, they leave it: their tokens
    are kept, and the kv cache, mask and positions are cut to the rows left (in the cache's
    buffer, no prefill again). A row's model inputs are the ones ``generate`` gives it
    (positions from the mask, the mask grown by one, the cache, ``logits_to_keep=1``, the
    float32 argmax), so the texts are ``generate``'s (tests; ``bench/bench_greedy.py``
    compares them on a main job's prompts and measures the gain)."""
    import torch

    pos = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)
    ends = torch.tensor(eos, dtype=torch.long, device=ids.device)
    rows = list(range(ids.shape[0]))  # the batch row each current row came from
    out: list[list[int]] = [[] for _ in rows]
    live = torch.ones(len(rows), dtype=torch.bool, device=ids.device)
    seq, step_ids = ids, ids
    for _ in range(max_new):
        logits = lm(input_ids=step_ids, attention_mask=mask, position_ids=pos, cache=cache,
                    use_cache=True, logits_to_keep=1).logits
        nxt = logits[:, -1].to(dtype=torch.float32).argmax(-1)
        seq = torch.cat([seq, nxt[:, None]], dim=-1)
        for r, t, alive in zip(rows, nxt.tolist(), live.tolist(), strict=True):
            if alive:
                out[r].append(t)
        live &= ~(torch.isin(nxt, ends) | criteria(seq, None))
        n_live = int(live.sum())
        if n_live == 0:
            break
        if len(rows) - n_live >= DROP_SHARE * len(rows):
            keep = live.nonzero().flatten()
            cache.batch_select_indices(keep)
            mask, pos, nxt, seq, live = mask[keep], pos[keep], nxt[keep], seq[keep], live[keep]
            rows = [rows[i] for i in keep.tolist()]
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=-1)
        pos, step_ids = pos[:, -1:] + 1, nxt[:, None]
    return out


def token_logprobs(tokenizer, logits, gen: list[list[int]], lengths: list[int],
                   k: int) -> list[list[TokenLogprob]]:
    """Per generated row, one :class:`TokenLogprob` for each of its first ``lengths[row]``
    tokens ``gen[row]``, with the ``k`` most likely tokens at that position.

    ``logits`` are generate's raw ``output_logits`` (one (rows, vocab) tensor per step), not
    its processed ``scores``: the log-probabilities are the log-softmax of the model's own
    distribution, as the OpenAI API and vLLM report them, the same whatever the sampling
    settings (the processed scores are divided by the temperature, and top-p sets the tokens
    it cuts to -inf, so a sampled token's log-probability would depend on them). For greedy
    decoding both are the same unless the model's generation config adds processors."""
    import torch

    steps = max(lengths, default=0)
    chosen, tops = [], []
    for t in range(steps):
        lp = torch.log_softmax(logits[t].float(), dim=-1)
        col = torch.tensor([row[t] if t < len(row) else 0 for row in gen], device=lp.device)
        chosen.append(lp.gather(1, col[:, None])[:, 0].cpu().tolist())
        v, i = lp.topk(min(k, lp.shape[-1]), dim=-1) if k else (lp[:, :0], lp[:, :0].long())
        tops.append((v.cpu().tolist(), i.cpu().tolist()))
    ids = {x for r, n in zip(gen, lengths) for x in r[:n]}
    ids |= {x for _, i in tops for row in i for x in row}
    order = sorted(ids)
    text = dict(zip(order, tokenizer.batch_decode([[x] for x in order],
                                                  clean_up_tokenization_spaces=False), strict=True))
    out = []
    for r, (row, n) in enumerate(zip(gen, lengths, strict=True)):
        out.append([TokenLogprob(text[row[t]], chosen[t][r], [
            TopLogprob(text[x], v) for v, x in zip(tops[t][0][r], tops[t][1][r], strict=True)])
            for t in range(n)])
    return out


def _eos_ids(tokenizer, model) -> list[int]:
    ids: list[int] = []
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for x in (gen_eos, tokenizer.eos_token_id):
        for v in x if isinstance(x, list | tuple) else [x]:
            if v is not None and v not in ids:
                ids.append(int(v))
    return ids


class _seeded:
    """Seed torch's RNG for one sampled batch without disturbing the caller's RNG state."""

    def __init__(self, seed: int | None, batch_no: int, sample: bool, device):
        self.active = sample and seed is not None
        self.seed = (seed or 0) * 1_000_003 + batch_no
        self.device = device

    def __enter__(self):
        if self.active:
            import torch

            devices = [self.device] if getattr(self.device, "type", "cpu") == "cuda" else []
            self.fork = torch.random.fork_rng(devices=devices)
            self.fork.__enter__()
            torch.manual_seed(self.seed)
        return self

    def __exit__(self, *exc):
        if self.active:
            return self.fork.__exit__(*exc)
        return False
