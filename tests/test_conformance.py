"""The engine contract (engine/base.py), checked on every backend. A new backend passes by adding one
entry to BACKENDS: a function (context) -> (engine, reference), where reference(prefix) gives the
exact next-token log-probs after `prefix` (a full forward pass, or the toy's table)."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_llama

import powersample
from powersample import rng
from powersample.engine import ENGINES
from powersample.engine.base import TOKEN_STREAM, Proposal
from powersample.engine.hf import HFEngine
from powersample.engine.toy import ToyEngine
from powersample.errors import PowerSampleError

EOS = 1
VOCAB = 32


def _toy(context: int | None):
    eng = ToyEngine.random(VOCAB, seed=7, scale=2.0, eos_token_ids=[EOS], max_length=context)
    return eng, lambda prefix: torch.log_softmax(eng.next_logp(tuple(prefix)), -1)


def _hf(reuse: bool):
    def make(context: int | None):
        model = tiny_llama(vocab=VOCAB, seed=3, scale=1.5, dtype=torch.float64, context=context or 256)

        def reference(prefix):
            with torch.no_grad():
                return torch.log_softmax(model(input_ids=torch.tensor([list(prefix)])).logits[0, -1], -1)

        return HFEngine(model, eos_token_ids=[EOS], reuse_cache=reuse), reference
    return make


BACKENDS = {"toy": _toy, "hf": _hf(reuse=True), "hf-no-cache": _hf(reuse=False)}  # name[-variant]
PROMPTS = [[0, 5, 6, 7, 8, 9, 10], [0, 3], [0], [0, 11, 12, 13, 2]]
Q = Proposal(temperature=0.7, top_k=6, top_p=0.9)


@pytest.fixture(params=list(BACKENDS), scope="module")
def backend(request):
    return BACKENDS[request.param]


@pytest.fixture(scope="module")
def engine(backend):
    return backend(None)


def _row(seqs, r):
    return seqs.tokens[r, : int(seqs.lengths[r])].tolist()


def _check_scores(ref, prefix, ext, r, proposal, seed=None, draws=0):
    """Every token row r drew scores as the reference says: log p, log q, entropy, top-1; given the
    row's seed and draw count, each token is the inverse CDF of q at the row's own uniform."""
    prefix = list(prefix)
    for j in range(int(ext.lengths[r])):
        logp = ref(prefix).double()
        tok = int(ext.tokens[r, j])
        logq = proposal.log_probs(logp[None].float()).double()[0]
        if seed is not None:
            u = float(rng.uniform(torch.tensor([seed]), TOKEN_STREAM, draws + j))
            assert tok == int(torch.searchsorted(logq.exp().cumsum(0), u * logq.exp().sum()))
        assert logq[tok] > -float("inf"), "drew a token outside the proposal's support"
        assert abs(float(ext.logp[r, j]) - float(logp[tok])) < 1e-4
        assert abs(float(ext.logq[r, j]) - float(logq[tok])) < 1e-4
        assert abs(float(ext.entropy[r, j]) + float((logp.exp() * logp).sum())) < 1e-4
        assert abs(float(ext.top1[r, j]) - float(logp.exp().max())) < 1e-4
        prefix.append(tok)
    return prefix


def test_logp_and_logq_are_the_reference_laws_for_ragged_prompts(engine):
    eng, ref = engine
    seqs = eng.start(PROMPTS, seeds=[1, 2, 3, 4])
    prefixes = [list(p) for p in PROMPTS]
    for max_new in ([5, 3, 7, 1], [4, 4, 0, 4]):  # two calls: the second continues where the first stopped
        ext = eng.extend(seqs, torch.tensor(max_new), Q)
        for r in range(len(PROMPTS)):
            assert int(ext.lengths[r]) <= max_new[r]
            assert ext.row(r) == _row(seqs, r)[len(prefixes[r]):]
            drawn = len(prefixes[r]) - len(PROMPTS[r])
            prefixes[r] = _check_scores(ref, prefixes[r], ext, r, Q, seed=r + 1, draws=drawn)
    assert [_row(seqs, r) for r in range(4)] == prefixes
    assert [seqs.completion(r) for r in range(4)] == [p[len(q):] for p, q in zip(prefixes, PROMPTS, strict=True)]


def test_topk_and_forced_first_token(engine):
    eng, ref = engine
    seqs = eng.start(PROMPTS, seeds=[0, 1, 2, 3])
    ids, vals = eng.topk(seqs, 3)
    for r, p in enumerate(PROMPTS):
        top = ref(p).topk(3)
        assert ids[r].tolist() == top.indices.tolist()
        assert torch.allclose(vals[r].double(), top.values.double(), atol=1e-5)
    assert [_row(seqs, r) for r in range(4)] == PROMPTS  # topk does not advance
    forced = torch.tensor([int(ids[0, 2]), -1, EOS, int(ids[3, 1])])
    ext = eng.extend(seqs, torch.tensor(3), Proposal(), first=forced)
    assert ext.tokens[[0, 2, 3], 0].tolist() == [int(ids[0, 2]), EOS, int(ids[3, 1])]
    assert bool(ext.eos[2]) and int(ext.lengths[2]) == 1  # forcing EOS ends the row
    for r, p in enumerate(PROMPTS):
        _check_scores(ref, p, ext, r, Proposal())


def test_rows_stop_at_eos_and_nowhere_else(engine):
    eng, _ = engine
    seqs = eng.start([[0, 4]] * 24, seeds=list(range(24)))
    ext = eng.extend(seqs, torch.tensor(10), Proposal(temperature=1.5))  # flat: EOS within 10 tokens is common
    assert bool(ext.eos.any()) and not bool(ext.eos.all())
    for r in range(24):
        row = ext.row(r)
        assert (EOS in row) == bool(ext.eos[r])
        assert EOS not in row[:-1]
        assert len(row) == 10 or bool(ext.eos[r])


def test_greedy_is_the_argmax_with_log_q_zero(engine):
    eng, ref = engine
    seqs = eng.start(PROMPTS[:2], seeds=[0, 1])
    ext = eng.extend(seqs, torch.tensor(4), Proposal(temperature=0.0))
    for r, p in enumerate(PROMPTS[:2]):
        prefix = list(p)
        for tok in ext.row(r):
            assert tok == int(ref(prefix).argmax())
            prefix.append(tok)
    assert bool((ext.logq == 0).all())


def test_cut_extend_settle_and_select_stay_exact(engine):
    eng, ref = engine
    seqs = eng.start(PROMPTS, seeds=[5, 6, 7, 8])
    eng.extend(seqs, torch.tensor(10), Proposal(temperature=1.0, top_k=20))
    g = torch.Generator().manual_seed(0)
    for step in range(5):
        comp_len = seqs.lengths - seqs.prompt_lengths
        t = (torch.rand(len(seqs), generator=g) * comp_len).long()
        keep = seqs.prompt_lengths + t
        old = [_row(seqs, r) for r in range(len(seqs))]
        ext = eng.extend(seqs, seqs.prompt_lengths + 10 - keep, Q, keep=keep)
        new = [_row(seqs, r) for r in range(len(seqs))]
        for r in range(len(seqs)):  # the proposal kept exactly the first keep[r] tokens, then drew afresh
            assert new[r][: int(keep[r])] == old[r][: int(keep[r])]
            assert new[r][int(keep[r]):] == ext.row(r)
            _check_scores(ref, new[r][: int(keep[r])], ext, r, Q)
        accept = torch.rand(len(seqs), generator=g) < 0.5
        eng.settle(seqs, accept)
        assert [_row(seqs, r) for r in range(len(seqs))] == [n if a else o for n, o, a in zip(new, old, accept,
                                                                                               strict=True)]
        if step == 2:  # reorder and duplicate rows mid-run, as SMC resampling does
            seqs = eng.select(seqs, torch.tensor([3, 0, 0, 2]))
    before = [_row(seqs, r) for r in range(len(seqs))]
    ext = eng.extend(seqs, torch.tensor(5), Proposal())  # the caches still score exactly after all that
    for r in range(len(seqs)):
        _check_scores(ref, before[r], ext, r, Proposal())


def test_rows_in_different_phases_stay_exact(engine):
    """Continuous batching: proposals drawn over several calls, cut and settled row by row, fresh
    prompts joining and idle rows shed mid-run; every row still holds what it should, scores exactly,
    and draws from its own stream as if it ran alone."""
    eng, ref = engine
    seqs = eng.start(PROMPTS, seeds=[5, 6, 7, 8])
    eng.extend(seqs, torch.tensor(4), Q)
    old = [_row(seqs, r) for r in range(4)]
    no_cut = torch.full((4,), -1)
    eng.extend(seqs, torch.tensor([3, 3, 0, 0]), Q, keep=torch.tensor([len(PROMPTS[0]) + 1, len(PROMPTS[1]), -1, -1]))
    eng.extend(seqs, torch.tensor([2, 2, 2, 0]), Q, keep=torch.tensor([-1, -1, len(PROMPTS[2]), -1]))  # and row 2
    with pytest.raises(PowerSampleError, match="cut again"):
        eng.extend(seqs, torch.tensor(1), Q, keep=torch.tensor([len(PROMPTS[0]), -1, -1, -1]))
    # (rows 0 and 1 were cut and drew 3 tokens, row 2 was cut a call later and drew 2, row 3 sat out)
    new = [_row(seqs, r) for r in range(4)]
    assert new[3] == old[3]  # row 3 sat out
    eng.settle(seqs, torch.tensor([True, False, False, False]), rows=torch.tensor([True, True, False, False]))
    assert [_row(seqs, r) for r in range(3)] == [new[0], old[1], new[2]]  # row 2 still in flight
    with pytest.raises(PowerSampleError, match=r"join\(\) of a row with a proposal in flight"):
        eng.join(seqs, torch.tensor([2]), [[0, 4]], [9])
    eng.join(seqs, torch.tensor([1]), [[0, 4, 4]], [42])  # a fresh prompt takes row 1, mid-run
    eng.extend(seqs, torch.tensor([1, 3, 1, 0]), Q, keep=no_cut)  # continues row 2's proposal too
    eng.settle(seqs, torch.tensor([False, False, False, False]), rows=torch.tensor([False, False, True, False]))
    assert seqs.pending is None and _row(seqs, 2) == old[2]  # rejected: row 2 is back as it was
    alone = eng.extend(eng.start([[0, 4, 4]], seeds=[42]), torch.tensor(3), Q).row(0)
    assert _row(seqs, 1) == [0, 4, 4] + alone  # the joined row drew exactly what it draws alone
    eng.extend(seqs, torch.tensor([0, 0, 2, 0]), Q, keep=torch.tensor([-1, -1, len(PROMPTS[2]) + 1, -1]))
    kept = [_row(seqs, r) for r in (0, 2, 3)]
    seqs = eng.shrink(seqs, torch.tensor([0, 2, 3]))  # shed row 1, row 2's proposal in flight
    eng.settle(seqs, torch.tensor([True, True, True]))
    assert [_row(seqs, r) for r in range(3)] == kept
    before = [_row(seqs, r) for r in range(3)]
    ext = eng.extend(seqs, torch.tensor(4), Proposal())  # the caches still score exactly after all that
    for r in range(3):
        _check_scores(ref, before[r], ext, r, Proposal())


def test_select_copies_rows_and_gives_duplicates_their_own_streams(engine):
    eng, _ = engine
    seqs = eng.start(PROMPTS[:2], seeds=[11, 12])
    eng.extend(seqs, torch.tensor(2), Proposal())
    twin = eng.select(seqs, torch.tensor([0, 1]))  # a plain copy continues exactly like the original
    sel = eng.select(seqs, torch.tensor([1, 0, 0, 0]))
    assert [_row(sel, r) for r in range(4)] == [_row(seqs, r) for r in (1, 0, 0, 0)]
    assert sel.prompt_lengths.tolist() == [2, 7, 7, 7]
    a = eng.extend(seqs, torch.tensor(6), Proposal(temperature=2.0))
    b = eng.extend(twin, torch.tensor(6), Proposal(temperature=2.0))
    c = eng.extend(sel, torch.tensor(6), Proposal(temperature=2.0))
    assert [a.row(0), a.row(1)] == [b.row(0), b.row(1)] == [c.row(1), c.row(0)]
    assert len({tuple(c.row(r)) for r in (1, 2, 3)}) == 3  # copies 1 and 2 of row 0 draw afresh
    seeded = eng.select(seqs, torch.tensor([0, 0]), seeds=torch.tensor([99, 99]))
    d = eng.extend(seeded, torch.tensor(6), Proposal(temperature=2.0))
    assert d.row(0) == d.row(1)  # same explicit seed, same prefix: same tokens


def test_tokens_depend_on_the_row_seed_only_not_on_the_batch(engine):
    eng, _ = engine
    alone = eng.extend(eng.start([[0, 7, 8]], seeds=[42]), torch.tensor(10), Q).row(0)
    crowd = eng.start([[0, 3], [0, 7, 8], [0, 9, 9, 9, 9]], seeds=[1, 42, 2])
    assert eng.extend(crowd, torch.tensor(10), Q).row(1) == alone
    other = eng.extend(eng.start([[0, 7, 8]], seeds=[43]), torch.tensor(10), Q).row(0)
    assert other != alone


def test_a_row_started_from_its_saved_completion_draws_what_it_would_have(engine):
    """Resuming (samplers/scheduler.py): a row restarted from prompt + completion so far, with its stream's
    draw count, by `start` or `join`, draws the same next tokens with the same scores as the row that ran on."""
    eng, _ = engine
    seqs = eng.start([[0, 7, 8]], seeds=[42])
    head = eng.extend(seqs, torch.tensor(4), Q).row(0) + eng.extend(seqs, torch.tensor(3), Q).row(0)
    drawn = int(seqs.draws[0])
    rest = eng.extend(seqs, torch.tensor(6), Q)
    resumed = eng.start([[0, 3], [0, 7, 8]], seeds=[1, 42], completions=[[], head], draws=[0, drawn])
    assert resumed.completion(1) == head and int(resumed.prompt_lengths[1]) == 3
    again = eng.extend(resumed, torch.tensor(6), Q)
    joined = eng.start([[0, 3], [0, 9]], seeds=[1, 2])
    eng.extend(joined, torch.tensor(2), Q)
    eng.join(joined, torch.tensor([1]), [[0, 7, 8]], [42], completions=[head], draws=[drawn])
    late = eng.extend(joined, torch.tensor(6), Q)
    for ext in (again, late):
        assert ext.row(1) == rest.row(0)
        torch.testing.assert_close(ext.logp[1, : len(rest.row(0))], rest.logp[0, : len(rest.row(0))])
        torch.testing.assert_close(ext.logq[1, : len(rest.row(0))], rest.logq[0, : len(rest.row(0))])
    assert int(resumed.draws[1]) == int(joined.draws[1]) == int(seqs.draws[0])


def test_full_context_stops_rows_and_long_prompts_raise(backend):
    eng, _ = backend(10)
    seqs = eng.start([[0, 2, 3, 4, 5, 6], [0, 2]], seeds=[0, 1])
    ext = eng.extend(seqs, torch.tensor(20), Proposal(temperature=0.0))  # greedy: let rows run to the limit
    assert int(seqs.lengths.max()) == 10 and bool((seqs.lengths <= 10).all())
    assert all(bool(ext.eos[r]) or int(seqs.lengths[r]) == 10 for r in range(2))
    full = seqs.lengths == 10
    assert bool((eng.extend(seqs, torch.tensor(5), Proposal()).lengths[full] == 0).all())
    with pytest.raises(PowerSampleError, match="prompt 1 has 10 tokens.*context of 10"):
        eng.start([[0], [0] * 10], seeds=[0, 1])


def test_bad_calls_and_protocol_violations_raise(engine):
    eng, _ = engine
    with pytest.raises(PowerSampleError, match="no prompts"):
        eng.start([], seeds=[])
    with pytest.raises(PowerSampleError, match="prompt 1 is empty"):
        eng.start([[0], []], seeds=[0, 1])
    with pytest.raises(PowerSampleError, match="one seed per prompt"):
        eng.start([[0], [0]], seeds=[0])
    seqs = eng.start(PROMPTS, seeds=[0, 1, 2, 3])
    eng.extend(seqs, torch.tensor(3), Proposal())
    with pytest.raises(PowerSampleError, match="settle\\(\\) needs a preceding extend\\(keep=...\\)"):
        eng.settle(seqs, torch.ones(4, dtype=torch.bool))
    with pytest.raises(PowerSampleError, match="keep must lie between"):
        eng.extend(seqs, torch.tensor(3), Proposal(), keep=seqs.prompt_lengths - 1)
    with pytest.raises(PowerSampleError, match="one seed per selected row"):
        eng.select(seqs, torch.tensor([0, 1]), seeds=torch.tensor([5]))
    eng.extend(seqs, torch.tensor(3), Proposal(), keep=seqs.prompt_lengths)
    for call in (lambda: eng.extend(seqs, torch.tensor(1), Proposal()),
                 lambda: eng.select(seqs, torch.tensor([0])),
                 lambda: eng.topk(seqs, 2)):
        with pytest.raises(PowerSampleError, match="between extend\\(keep=...\\) and settle\\(\\)"):
            call()
    eng.settle(seqs, torch.zeros(4, dtype=torch.bool))
    eng.extend(seqs, torch.tensor(1), Proposal())  # settled: usable again


def test_hf_draws_what_a_toy_table_of_the_same_model_draws():
    """The transformers backend obeys the law of its model: a toy engine holding the model's exact
    next-token table draws the same tokens with the same log p / log q, through MH power sampling."""
    model = tiny_llama(vocab=8, scale=2.0, dtype=torch.float64)
    prompts = [[0, 3], [0, 5, 6]]
    toy = ToyEngine.from_model(model, prompts, depth=4)
    hf = HFEngine(model, eos_token_ids=[EOS])
    settings = dict(max_new_tokens=4, block_size=2, mcmc_steps=3, top_k=6, seeds=[3, 4], num_samples=4)
    a, b = (powersample.sample(e, prompts, "power", **settings) for e in (toy, hf))
    assert [r.token_ids for r in a] == [r.token_ids for r in b]
    assert max(abs(x.logp - y.logp) for x, y in zip(a, b, strict=True)) < 1e-4
    assert [r.stats for r in a] == [r.stats for r in b]


def test_every_registered_engine_is_checked_here():
    assert {name.split("-")[0] for name in BACKENDS} == set(ENGINES)


def test_toy_table_names_a_prefix_it_lacks():
    toy = ToyEngine.from_table({(0,): [0.0, -1.0, -2.0], (0, 2): [0.0, 0.0, -float("inf")]}, eos_token_ids=[1])
    seqs = toy.start([[0]], seeds=[0])
    toy.extend(seqs, torch.tensor(1), Proposal(), first=torch.tensor([2]))
    assert toy.topk(seqs, 3)[0][0, 2] == 2  # probability 0 ranks last
    with pytest.raises(PowerSampleError, match=r"no entry for prefix \[0, 2, 0\]"):
        toy.extend(seqs, torch.tensor(2), Proposal(temperature=0.0))


def _states(model, ids: list[int]) -> torch.Tensor:
    """The final-layer hidden states of one plain full forward pass over `ids` (len, d)."""
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states[-1][0].float()


def _check_hidden(eng, prefix: list[int], ext, r: int) -> None:
    """Row r's new tokens' hidden states are those of the positions that drew them: prefix[-1], then each token."""
    n = int(ext.lengths[r])
    ref = _states(eng.model, prefix + ext.row(r))
    torch.testing.assert_close(ext.hidden[r, :n], ref[len(prefix) - 1: len(prefix) - 1 + n], atol=1e-5, rtol=1e-5)


def _check_q(eng, seqs, r: int) -> None:
    p = int(seqs.prompt_lengths[r])
    torch.testing.assert_close(eng.prompt_hidden(seqs)[r], _states(eng.model, _row(seqs, r)[:p]).mean(0),
                               atol=1e-5, rtol=1e-5)


def test_hidden_states_are_those_of_a_plain_forward_pass(engine):
    """H (each drawn token's final-layer state, at the position whose distribution drew it) and Q (the mean
    over the prompt) as a plain full forward pass gives them: ragged prompts, an MH cut accepted, one rejected
    (its old states back), a row joining mid-run. A backend without hidden states says so and returns None."""
    eng, _ = engine
    seqs = eng.start(PROMPTS, seeds=[5, 6, 7, 8])
    if not eng.supports_hidden:
        ext = eng.extend(seqs, torch.tensor(3), Q, hidden=True)
        assert ext.hidden is None and eng.prompt_hidden(seqs) is None
        return
    assert eng.prompt_hidden(seqs) is None  # no forward pass has run yet
    before = [_row(seqs, r) for r in range(4)]
    ext = eng.extend(seqs, torch.tensor(4), Q, hidden=True)
    assert ext.hidden.shape == (4, ext.tokens.shape[1], eng.hidden_size)
    for r in range(4):
        _check_hidden(eng, before[r], ext, r)
        _check_q(eng, seqs, r)
    assert eng.extend(seqs, torch.tensor(1), Q).hidden is None  # only when asked
    old = [_row(seqs, r) for r in range(4)]
    keep = torch.tensor([len(PROMPTS[0]), len(PROMPTS[1]) + 2, -1, len(PROMPTS[3]) + 1])  # row 0: to its prompt
    ext = eng.extend(seqs, torch.tensor([3, 3, 0, 3]), Q, keep=keep, hidden=True)
    for r in (0, 1, 3):
        _check_hidden(eng, old[r][: int(keep[r])], ext, r)
    eng.settle(seqs, torch.tensor([True, False, False, True]))  # rows 1 (rejected) and 3 (accepted)
    eng.join(seqs, torch.tensor([2]), [[0, 9, 9, 4, 3]], [42])  # a fresh prompt, mid-run
    before = [_row(seqs, r) for r in range(4)]
    assert before[1] == old[1]
    ext = eng.extend(seqs, torch.tensor(3), Q, hidden=True)
    for r in range(4):
        _check_hidden(eng, before[r], ext, r)
        _check_q(eng, seqs, r)
    seqs = eng.shrink(seqs, torch.tensor([2, 0]))
    _check_q(eng, seqs, 0)
