"""The text head's tokenizer: a pretrained LLM's own, or for the random-init tiny LLM a small
explanation tokenizer trained offline (no hub download is ever needed).

Design choices (why):
- BPE over Metaspace-marked words ("▁the") with punctuation split off: English explanations
  become short sequences (whole frequent words are single tokens) and decoding is an exact
  round trip of the lower-cased text, spaces included.
- No `continuing_subword_prefix` / `end_of_word_suffix` and no WordPiece: in `tokenizers`
  those tokens get ids in hash-map order, so two trainings on the same texts can give
  different vocabularies (huggingface/tokenizers#1794). Plain BPE sorts its alphabet and
  breaks merge ties by id, so the same texts always give the same vocab.
- A fixed ASCII initial alphabet so that ordinary characters missing from the training
  texts (digits, rare letters) never become `<unk>`.
"""

from __future__ import annotations

import string
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIAL_TOKENS = [PAD, BOS, EOS, UNK]  # ids 0..3, in this order
_INITIAL_ALPHABET = sorted(set(string.ascii_lowercase + string.digits + string.punctuation))


def train_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Train a lower-casing BPE tokenizer on `texts`; deterministic for the same inputs."""
    tok = Tokenizer(models.BPE(unk_token=UNK))
    # NFKC folds look-alike characters (ligatures, full-width forms) before lower-casing.
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Metaspace(), pre_tokenizers.Punctuation()]
    )
    tok.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=_INITIAL_ALPHABET,
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=PAD, bos_token=BOS, eos_token=EOS, unk_token=UNK
    )


def head_tokenizer(llm_path: str | None, texts: list[str], vocab_size: int):
    """The LLM's own tokenizer (its vocabulary is what its embeddings were trained on); a new
    one, trained on `texts`, only for a random-init LLM (llm_path None)."""
    if llm_path is None:
        return train_tokenizer(texts, vocab_size)
    return load_tokenizer(llm_path)


def save_tokenizer(tok: PreTrainedTokenizerFast, folder: str | Path) -> None:
    Path(folder).mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(str(folder))


def load_tokenizer(folder: str | Path):
    if not (Path(folder) / "tokenizer_config.json").is_file():
        raise FileNotFoundError(f"{folder}: no tokenizer here (tokenizer_config.json missing)")
    return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
