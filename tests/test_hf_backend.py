"""The hf generation backend on a small trained scratch student (real model, offline)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest

from nesyloop.gen.base import Completion, GenSettings, Request
from nesyloop.gen.hf import HFBackend
from toydata import toy_pairs

from nesyloop.students.scratch import ScratchSettings, create_scratch_student
from nesyloop.students.train import TrainSettings, train_sft


def pairs(n: int, seed: int) -> list[dict]:
    return toy_pairs(n, seed, max_a=99, prefix="Q:", suffix=". Done.")


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    texts = [p["prompt"] + p["completion"] for p in pairs(300, 1)]
    base = create_scratch_student(texts, root / "base", ScratchSettings(hidden=64, layers=2, heads=2, vocab_size=400))
    out = root / "student"
    train_sft(base, pairs(256, 0), out, TrainSettings(max_steps=25, per_device_train_batch_size=16,
                                                            learning_rate=3e-3), progress=False)
    return HFBackend(out, batch_size=8, progress=False)


def prompts() -> list[str]:
    # mixed lengths, so sorting by length reorders them
    return [f"Q: {a} + {b} =" if a % 3 else f"Q: {a} + {b} = ? Q: {a} + {b} =" for a, b in
            [(5, 3), (41, 2), (7, 7), (90, 9), (12, 1), (3, 0), (66, 6), (18, 5), (2, 2), (75, 4), (30, 3)]]


def test_batched_greedy_equals_one_at_a_time(backend):
    settings = GenSettings(max_tokens=10)
    reqs = [Request.raw(p, settings) for p in prompts()]
    batched = backend.generate(reqs)
    single = HFBackend(backend.model, batch_size=1, model=backend.lm, tokenizer=backend.tokenizer, progress=False)
    one_by_one = [single.generate([r])[0] for r in reqs]
    assert [c.texts for c in batched] == [c.texts for c in one_by_one]
    assert [c.prompt_tokens for c in batched] == [c.prompt_tokens for c in one_by_one]
    assert [c.completion_tokens for c in batched] == [c.completion_tokens for c in one_by_one]
    for r, c in zip(reqs, batched):
        assert isinstance(c, Completion) and len(c.texts) == 1
        assert c.prompt_tokens == len(backend.tokenizer(r.prompt)["input_ids"])
        assert 1 <= c.completion_tokens <= 10


def test_block_cache_matches_concatenation():
    import torch

    from nesyloop.gen.kv import BLOCK, _layer_class

    layer, rng = _layer_class()(), torch.Generator().manual_seed(0)
    keys, values = [], []
    for width in [7] + [1] * (BLOCK + 5) + [3]:  # a prompt, then one token a step, past a block
        k, v = torch.randn(2, 2, width, 4, generator=rng), torch.randn(2, 2, width, 4, generator=rng)
        keys.append(k)
        values.append(v)
        got_k, got_v = layer.update(k, v)
        assert torch.equal(got_k, torch.cat(keys, dim=-2)) and torch.equal(got_v, torch.cat(values, dim=-2))
    assert layer._k.shape[-2] > layer.get_seq_length() == 7 + BLOCK + 5 + 3
    layer.batch_select_indices(torch.tensor([1]))  # the parent's operations keep it consistent
    layer.crop(-2)
    k, v = torch.randn(1, 2, 1, 4), torch.randn(1, 2, 1, 4)
    got_k, _ = layer.update(k, v)
    assert torch.equal(got_k, torch.cat([torch.cat(keys, dim=-2)[1:, :, :-2], k], dim=-2))


def test_block_cache_gives_the_default_caches_texts(backend, monkeypatch):
    from nesyloop.gen import hf, kv

    assert type(hf.block_cache(backend.lm).layers[0]).__name__ == "BlockLayer"
    monkeypatch.setattr(kv, "BLOCK", 2)  # the buffers grow several times per answer
    reqs = [Request.raw(p, GenSettings(max_tokens=12)) for p in prompts()]
    blocked = backend.generate(reqs)
    monkeypatch.setattr(hf, "block_cache", lambda model: None)  # transformers' own cache
    default = backend.generate(reqs)
    assert [c.texts for c in blocked] == [c.texts for c in default]
    assert max(c.completion_tokens for c in blocked) > 2 * kv.BLOCK


def test_greedy_batches_drop_finished_rows_and_give_generates_outputs(backend, monkeypatch):
    """Greedy batches drop rows as they finish (eos, a stop string): the texts and token
    counts are transformers' generate's, where finished rows decode padding to the end."""
    from nesyloop.gen import hf

    drops = []

    def counting_cache(model):  # the real block cache, counting the rows it is cut to
        cache = hf_block_cache(model)
        select = cache.batch_select_indices
        cache.batch_select_indices = lambda keep: (drops.append(len(keep)), select(keep))
        return cache

    hf_block_cache = hf.block_cache
    monkeypatch.setattr(hf, "block_cache", counting_cache)
    monkeypatch.setattr(hf, "DROP_SHARE", 0.1)
    engine = HFBackend(backend.model, batch_size=16, model=backend.lm,
                       tokenizer=backend.tokenizer, progress=False)
    qs = prompts() + [f"Q: {a} + {a} =" for a in range(20, 30)]
    for settings in (GenSettings(max_tokens=12), GenSettings(max_tokens=12, stop=(". D",))):
        reqs = [Request.raw(p, settings) for p in qs]
        drops.clear()
        dropped = engine.generate(reqs)
        assert drops and all(0 < n < 16 for n in drops)  # rows dropped mid-batch
        drops.clear()
        engine.drop_finished = False
        whole = engine.generate(reqs)
        engine.drop_finished = True
        assert not drops  # generate keeps every row
        assert [(c.texts, c.completion_tokens) for c in dropped] == \
            [(c.texts, c.completion_tokens) for c in whole]
        lengths = {c.completion_tokens for c in dropped}
        assert len(lengths) > 1 and max(lengths) < 12  # rows ended at different steps, early


def test_stop_strings_cut_and_stop_early(backend):
    free = backend.generate([Request.raw("Q: 5 + 3 =", GenSettings(max_tokens=12))])[0]
    stopped = backend.generate([Request.raw("Q: 5 + 3 =", GenSettings(max_tokens=12, stop=(".",)))])[0]
    assert "." in free.text  # the trained student writes " 8. Done."
    assert stopped.text == free.text.split(".")[0]
    assert stopped.completion_tokens < free.completion_tokens


def test_n_samples_and_seed(backend):
    settings = GenSettings(max_tokens=6, temperature=1.0, n=3, seed=7)
    reqs = [Request.raw("Q: 4 + 4 =", settings), Request.raw("Q: 9 + 1 =", settings)]
    a = backend.generate(reqs)
    b = backend.generate(reqs)
    assert [len(c.texts) for c in a] == [3, 3]
    assert [c.texts for c in a] == [c.texts for c in b]  # seeded
    greedy = backend.generate([Request.raw("Q: 4 + 4 =", GenSettings(max_tokens=6, n=2))])[0]
    assert len(greedy.texts) == 2 and greedy.texts[0] == greedy.texts[1]


def test_chat_requests_without_template_join_contents(backend):
    settings = GenSettings(max_tokens=8)
    chat = Request.chat([{"role": "system", "content": "Q: 5 + 3"}, {"role": "user", "content": "="}], settings)
    raw = Request.raw("Q: 5 + 3\n\n=", settings)
    c, r = backend.generate([chat, raw])
    assert c.texts == r.texts and c.prompt_tokens == r.prompt_tokens
    assert backend.kind == "hf" and backend.generate([]) == []


def test_stop_check_decodes_only_trigger_rows_and_agrees_with_full_decoding(backend):
    """The stop criterion looks only at rows whose newest token can end a stop string; its
    verdicts equal decoding every row at every step."""
    import torch

    from nesyloop.gen.hf import StopOnStrings

    tok = backend.tokenizer
    stops = (". Done", "Q:")
    crit = StopOnStrings(tok, stops, prompt_width=2)
    assert crit.triggers is not None and 0 < len(crit.triggers) < len(tok)
    texts = ["Q: 5 + 3 = 8. Done", "Q: 5 + 3 = 8. Do", "Q: 1 + 1 = 2 Q:", "Q: 1 + 1 = 2 Q"]
    rows = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    width = max(len(r) for r in rows)
    for upto in range(3, width + 1):  # every generation step
        ids = torch.tensor([(r[:upto] + [tok.pad_token_id or 0] * width)[:upto] for r in rows])
        tails = tok.batch_decode(ids[:, max(2, upto - crit.window):].tolist(),
                                 skip_special_tokens=True)
        full = [any(s in t for s in stops) for t in tails]
        new = crit(ids).tolist()
        # a row flagged by full decoding at this step is flagged by the trigger check as soon
        # as the stop string is completed (its last token is a trigger)
        for i, r in enumerate(rows):
            completed_now = full[i] and (upto <= len(r)) and not any(
                s in tok.decode(r[max(2, upto - 1 - crit.window):upto - 1]) for s in stops)
            if completed_now:
                assert new[i]
            if new[i]:
                assert full[i]


def test_student_engine_factory_builds_the_hf_engine(backend):
    from nesyloop.errors import ConfigError
    from nesyloop.gen.base import Backend
    from nesyloop.gen.registry import make_student

    student = make_student(backend.model, batch_size=8, progress=False)
    assert isinstance(student, HFBackend) and isinstance(student, Backend)
    assert student.kind == "hf" and student.model == backend.model and student.batch_size == 8
    reqs = [Request.raw(p, GenSettings(max_tokens=6)) for p in prompts()[:4]]
    assert [c.texts for c in student.generate(reqs)] == [c.texts for c in backend.generate(reqs)]
    conf = student.confidence(prompts()[:4], 3)
    assert conf == backend.confidence(prompts()[:4], 3) and all(0.0 <= c <= 1.0 for c in conf)
    student.close()
    with pytest.raises(ConfigError, match="unknown engine 'vllm'"):
        make_student(backend.model, engine="vllm")


def test_backends_without_logprobs_have_no_confidence():
    from nesyloop.gen.base import Backend
    from nesyloop.tasks.bazaar import OracleBackend

    oracle = OracleBackend()
    assert isinstance(oracle, Backend)
    assert oracle.confidence(["Question: How many figs?\nAnswer:", "x"], 4) == [None, None]


def test_prediction_stage_generates_every_split_in_one_call(backend, tmp_path):
    """A prediction stage hands all its splits' prompts to the engine at once (full batches,
    sorted across splits); each split's file gets its own records, in its own order, with the
    texts the split alone gets."""
    from nesyloop.io import read_jsonl
    from nesyloop.methods.common import plain_prompts, predict_stage, write_examples
    from nesyloop.runs.rundir import RunDir
    from nesyloop.students.prompt import STUDENT_STOP
    from nesyloop.tasks.base import Example

    questions = [p.removeprefix("Q: ") for p in prompts()]
    split = {"dev": questions[:3], "test": questions[3:]}
    data = tmp_path / "data"
    for name, qs in split.items():
        write_examples(data / f"{name}.jsonl", [Example(id=f"{name}-{i}", question=q, answer="0")
                                                for i, q in enumerate(qs)])
    calls = []

    class Counting:  # the real engine, counting its generate calls
        def __init__(self):
            self.inner = HFBackend(backend.model, batch_size=4, model=backend.lm,
                                   tokenizer=backend.tokenizer, progress=False)

        def generate(self, requests):
            calls.append(len(requests))
            return self.inner.generate(requests)

        def close(self):
            pass

    res = RunDir(tmp_path / "run").stage(
        "predict-x", {"model": "m"},
        predict_stage(lambda model, log_path=None: Counting(), backend.model, data,
                      ["dev", "test"], 8))
    assert calls == [len(questions)]
    for name, qs in split.items():
        recs = read_jsonl(res.path / f"{name}.jsonl")
        assert [r["id"] for r in recs] == [f"{name}-{i}" for i in range(len(qs))]
        examples = [Example(id="x", question=q, answer="0") for q in qs]
        alone = backend.generate([Request.raw(p, GenSettings(max_tokens=8, stop=STUDENT_STOP))
                                  for p in plain_prompts(examples)[0]])
        assert [r["output"] for r in recs] == [c.text for c in alone]
        assert res.info[name]["n"] == len(qs)
