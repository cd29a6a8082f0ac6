"""The MATH500 Dynamic Power Sampling recipe of docs/eval.md, end to end, offline, through the CLI:
a fixed-k logging run, `controller train`, `controller replay`, a live `eval --method dynamic` with the
trained controller, and `report` of both runs side by side.

The commands are the documented ones with tiny settings (k_max = 4 instead of 8, 8 new tokens) on the
first 20 shipped MATH500 problems (training needs 10 problems: `--split 0/2` keeps half), and a tiny
local model built here: a character-level tokenizer that knows `\\boxed{` as one token, and a Llama
whose blocks add nothing and whose output head favours `\\boxed{`, `1`, `2`, `}` and EOS. Its answers
are garbage ("11", "2", "121", ...), but they differ between chains, so the controller's labels
("the majority of the first k chains is final") have both classes.
"""

from __future__ import annotations

import json
import string

import pytest

from powersample.cli.main import main

PROBLEMS = 20
# the docs' settings, scaled down (docs/eval.md: alpha 4, 10 MH steps, 3072 tokens in blocks of 192)
SETTINGS = ["--alpha", "4", "--mcmc-steps", "2", "--max-new-tokens", "8", "--block-size", "4", "--batch-size", "8",
            "--seed", "0", "--device", "cpu", "--limit", str(PROBLEMS), "--grade-workers", "0", "--no-progress"]
K_MAX = 4
# output-head logits: all other tokens get -20, so completions are strings of these
LOGITS = {"\\boxed{": 1.0, "1": 1.5, "2": 1.0, "}": 1.2, "</s>": -0.5}


@pytest.fixture(scope="module")
def boxed_model(tmp_path_factory):
    """A HF model folder: char-level tokenizer (+ `\\boxed{`), a context-free Llama emitting LOGITS."""
    import torch
    from conftest import tiny_llama
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ("<pad>", "<s>", "</s>", "<unk>")
    chars = [c for c in string.printable if c not in "\x0b\x0c\r"]
    vocab = {t: i for i, t in enumerate((*specials, *chars, "\\boxed{"))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.add_tokens([AddedToken("\\boxed{", normalized=False)])
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")  # one token per character
    tok.decoder = decoders.Fuse()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>")

    model = tiny_llama(vocab=len(vocab), eos=vocab["</s>"], context=2048)  # MATH500 prompts: up to ~1,000 chars
    with torch.no_grad():
        for layer in model.model.layers:  # blocks add nothing: the last hidden state is the token's embedding
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.model.embed_tokens.weight.fill_(1.0)  # one embedding for all: the normed hidden state is all ones
        model.lm_head.weight.zero_()
        model.lm_head.weight[:, 0] = -20.0  # so logit(t) = lm_head.weight[t, 0]
        for t, logit in LOGITS.items():
            model.lm_head.weight[vocab[t], 0] = logit
    model.config.bos_token_id = 1
    out = tmp_path_factory.mktemp("boxed-model")
    model.save_pretrained(out)
    fast.save_pretrained(out)
    return str(out)


@pytest.mark.slow  # ~15 s on 2 CPU cores: five commands, two of them sampling 20 problems
def test_the_math500_recipe_runs_end_to_end(boxed_model, tmp_path, capsys):
    k8, dps, ctrl, replayed = (str(tmp_path / n) for n in ("math500-k8", "math500-dps", "gbdt.skops", "dps"))
    common = ["--task", "math500", "--model", boxed_model, *SETTINGS]

    # 1. the fixed-k logging run (per-block checkpoints come with method power)
    assert main(["eval", *common, "--method", "power", "--samples-per-problem", str(K_MAX), "--out", k8]) == 0
    # 2. train on half of the problems
    assert main(["controller", "train", k8, "--split", "0/2", "--k-max", str(K_MAX), "-o", ctrl]) == 0
    printed = capsys.readouterr().out
    assert "gbdt on 10 problems" in printed and f"wrote {ctrl}" in printed
    # 3. every controller replayed on the other half
    assert main(["controller", "replay", k8, "--split", "1/2", "--k-max", str(K_MAX), "--controller", f"gbdt:{ctrl}",
                 "--out", replayed]) == 0
    printed = capsys.readouterr().out
    assert "10 problems" in printed and f"| gbdt:{ctrl} |" in printed
    # 4. live, with the trained controller
    assert main(["eval", *common, "--method", "dynamic", "--controller", f"gbdt:{ctrl}", "--option", f"k_max={K_MAX}",
                 "--out", dps]) == 0
    records = [json.loads(line) for line in (tmp_path / "math500-dps" / "dynamic.jsonl").read_text().splitlines()]
    assert len(records) == PROBLEMS and {r["k"] for r in records} <= {2, 4}
    # the live run decides as the replay of the same controller on the logged chains (same seeds)
    decided = [json.loads(line) for line in (tmp_path / "dps" / "decisions.jsonl").read_text().splitlines()]
    live = {r["id"]: (r["k"], r["tokens"], r["chosen"]) for r in records}
    assert [(d["k"], d["tokens"], d["chosen"]) for d in decided] == [live[d["id"]] for d in decided]
    # 5. both runs side by side, per problem
    assert main(["report", dps, k8, "--no-plots"]) == 0
    printed = capsys.readouterr().out
    assert f"controller gbdt:{ctrl}, budget k_min=2 +2 up to k_max={K_MAX}" in printed
    assert f"on the {PROBLEMS} problems both hold" in printed
    assert "| fixed k=4 |" in printed and f"(gbdt:{ctrl}) |" in printed
