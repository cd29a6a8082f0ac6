"""The gym's tokenizer: one token per character of a 17-symbol alphabet, built with `tokenizers`.

Saved in the standard format (tokenizer.json + tokenizer_config.json), so AutoTokenizer loads it with
no powersample code. Encoding adds BOS in front and nothing behind: a prompt is continued, not ended.
"""

from __future__ import annotations

import json
from pathlib import Path

SPECIALS = ("<pad>", "<s>", "</s>", "<unk>")  # ids 0..3
PAD_ID, BOS_ID, EOS_ID, UNK_ID = range(4)
ALPHABET = "0123456789+=;:AQ\n"  # everything a prompt or completion uses
VOCAB = {tok: i for i, tok in enumerate((*SPECIALS, *ALPHABET))}
MAX_LENGTH = 128  # the model's context: prompt (11) + longest completion (34) fits with room


def build_tokenizer():
    """A transformers fast tokenizer over ALPHABET with <s>/</s>/<pad>/<unk>."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(VOCAB, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")  # every char alone
    tok.decoder = decoders.Fuse()  # join tokens back with no spaces in between
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B",
                                                       special_tokens=[("<s>", BOS_ID)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", unk_token="<unk>", model_max_length=MAX_LENGTH)


def save_tokenizer(out_dir: str | Path) -> None:
    """Write the tokenizer files into `out_dir`, loadable by transformers 4.x and 5.x alike."""
    out_dir = Path(out_dir)
    build_tokenizer().save_pretrained(str(out_dir))
    cfg_path = out_dir / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"  # v5 writes its new name, which v4 lacks
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def encode(text: str) -> list[int]:
    """Token ids of `text` without specials, matching the saved tokenizer (unknown chars -> <unk>)."""
    return [VOCAB.get(ch, UNK_ID) for ch in text]
