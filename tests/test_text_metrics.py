"""Text metrics with the real pycocoevalcap scorers and Java.

METEOR's JVM start (loading its paraphrase table) costs ~6 s per evaluation, so every real
evaluation runs once, in a module-scoped fixture, and the tests share the results. SPICE jar
presence is always monkeypatched, so the results do not depend on this machine's pycocoevalcap.
"""

from __future__ import annotations

import math
import os
import threading
import time

import pytest
import torch

from megl.evaluate import text as tm

METRICS = ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider")

SENTENCES = [
    "a man is riding a brown horse on the beach",
    "two children are playing football in the park",
    "a woman is cutting vegetables in the kitchen",
    "the dog is catching a red frisbee in the air",
    "a chef is cooking pasta on a gas stove",
    "people are swimming in a clear blue lake",
    "a boy is reading a book under a large tree",
    "an old man is painting a wooden fence white",
    "a girl is riding her bicycle down the street",
    "the musician is playing a guitar on stage",
]
UNRELATED = [
    "purple elephants juggle seven violins quietly",
    "frozen clocks whisper about ancient mathematics",
    "tiny robots negotiate with stubborn volcanoes",
    "silver penguins compose operas for sleepy moons",
    "melting crayons argue over distant galaxies",
    "velvet submarines collect forgotten umbrellas",
    "glowing turnips debate philosophy at midnight",
    "nervous cathedrals knit scarves for comets",
    "orange fog sells ladders to invisible whales",
    "copper owls memorise timetables of storms",
]


def _evaluate(hyps, refs, *, jars_present=False, spice_child=None, **kwargs):
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tm, "missing_spice_jars", lambda: [] if jars_present else list(tm.SPICE_JARS))
        if spice_child is not None:
            mp.setattr(tm, "_SPICE_CHILD", spice_child)
        return tm.score_explanations(hyps, refs, timeout_s=60.0, **kwargs)


def _split_200(sep: str) -> tuple[dict, dict]:
    """200 samples; every 7th hypothesis has its words joined by `sep`, plus three empty ones."""
    hyps, refs = {}, {}
    for i in range(200):
        words = SENTENCES[i % 10].split()
        words[-1] = f"{words[-1]}{i // 10}"  # vary the vocabulary between samples
        hyp = (sep if i % 7 == 0 else " ").join(words)
        hyps[f"s{i}"] = hyp
        refs[f"s{i}"] = [" ".join(words), SENTENCES[(i + 3) % 10]]
    hyps["s5"], hyps["s6"], hyps["s8"] = "", "   ", "..."  # empty, blank, empty after tokenising
    return hyps, refs


def _with_breaks(i: int, sentence: str) -> str:
    """Samples 0, 3, 6 get a newline / CRLF / tab between their words instead of a space."""
    sep = {0: "\n", 3: "\r\n", 6: "\t"}.get(i, " ")
    return sep.join(sentence.split())


@pytest.fixture(scope="module")
def identical():
    """Each hypothesis is its references' text; three of them with line breaks for spaces."""
    hyps = {str(i): _with_breaks(i, s) for i, s in enumerate(SENTENCES)}
    return _evaluate(hyps, {str(i): [s, s] for i, s in enumerate(SENTENCES)})


@pytest.fixture(scope="module")
def different():
    return _evaluate({str(i): s for i, s in enumerate(UNRELATED)}, {str(i): [s, s] for i, s in enumerate(SENTENCES)})


@pytest.fixture(scope="module")
def with_newlines():
    return _evaluate(*_split_200("\n"))


@pytest.fixture(scope="module")
def hand_bleu():
    """One sample whose BLEU-1 is checked by hand; SPICE 'present' but failing (Java 17 cache)."""
    failing = tm._CHILD_PRELUDE + "raise RuntimeError('simulated SPICE failure: LMDB cache')\n"
    return _evaluate(
        {"x": "The cat sat on the mat."},
        {"x": ["the cat is on the mat", "there is a cat on the mat"]},
        jars_present=True,
        spice_child=failing,
    )


def test_identical_text_scores_perfectly(identical):
    assert identical["text_samples"] == 10
    assert identical["bleu_4"] == pytest.approx(1.0, abs=1e-6)
    assert identical["bleu_1"] == pytest.approx(1.0, abs=1e-6)
    assert identical["meteor"] > 0.95
    assert identical["rouge_l"] == pytest.approx(1.0)
    assert 0 < identical["cider"] <= 10.0 + 1e-6  # CIDEr-D of a perfect match is at most 10


def test_unrelated_text_scores_lower_on_every_metric(identical, different):
    for name in METRICS:
        assert different[name] < identical[name], name


def test_bleu_1_matches_hand_computation(hand_bleu):
    # Tokenised: "the cat sat on the mat" (6 tokens; PTB lower-cases and drops the '.').
    # Clipped unigram matches: the 2 (a reference has 2), cat 1, sat 0, on 1, mat 1 -> 5 of 6.
    # Closest reference length is 6 = hypothesis length, so the brevity penalty is 1.
    assert hand_bleu["bleu_1"] == pytest.approx(5 / 6, abs=1e-6)


def test_cider_document_frequency_is_split_wide(identical):
    from pycocoevalcap.cider.cider import Cider

    # CIDEr-D weights n-grams by log(#samples) - log(document frequency) over the scored set. A
    # one-sample split gives every n-gram weight log(1) - log(1) = 0, so per-sample CIDEr is 0
    # and its mean differs from the split's; batches would likewise get batch-local weights.
    # SENTENCES are lower-case without punctuation, so PTB tokenisation is the identity here.
    hyps = {str(i): [s] for i, s in enumerate(SENTENCES)}
    refs = {str(i): [s, s] for i, s in enumerate(SENTENCES)}
    singles = [Cider().compute_score({k: refs[k]}, {k: hyps[k]})[0] for k in hyps]
    direct, _ = Cider().compute_score(refs, hyps)
    assert identical["cider"] == pytest.approx(direct)  # computed once over the whole split
    assert identical["cider"] > 1.0
    assert sum(singles) / len(singles) == pytest.approx(0.0)
    assert abs(identical["cider"] - sum(singles) / len(singles)) > 1.0


def test_newline_in_hypothesis_neither_hangs_nor_changes_scores(identical, with_newlines):
    # Before sanitising, a "\n" made pycocoevalcap's METEOR raise while holding its lock and the
    # next call deadlock. In `identical` three hypotheses have "\n" / "\r\n" / "\t" where their
    # reference has a space; the spaced text would score perfectly, and so do they.
    assert _with_breaks(0, SENTENCES[0]) != SENTENCES[0]
    for name in ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_l"):
        assert identical[name] == pytest.approx(1.0, abs=1e-6), name
    assert identical["meteor"] > 0.95
    # and at scale: 200 samples, every 7th with newlines, finished (no deadlock, no timeout)
    assert with_newlines["text_samples"] == 200


def test_empty_hypotheses_do_not_crash(with_newlines):
    for name in METRICS:
        assert math.isfinite(with_newlines[name]), name
    assert with_newlines["text_samples"] == 200


def test_sanitize_and_placeholder():
    assert tm.sanitize(" a\nb\r\nc\td\x0ce\u2028f  |||g ") == "a b c d e f g"
    ids, hyps, refs = tm._inputs({"a": " \n", "b": "x"}, {"a": ["r", ""], "b": "y"})
    assert hyps == [tm.EMPTY_HYPOTHESIS, "x"] and refs == [["r"], ["y"]]


def test_missing_reference_names_the_id():
    with pytest.raises(ValueError, match="'b'"):
        tm.score_explanations({"a": "x", "b": "y"}, {"a": ["x"], "b": ["", " "]})
    with pytest.raises(ValueError, match="'c'"):
        tm.score_explanations({"c": "x"}, {})


def test_spice_unavailable_without_jars(identical, with_newlines):
    assert identical["spice"] is None
    assert identical["spice_status"].startswith("unavailable")
    assert "stanford-corenlp-3.6.0.jar" in identical["spice_status"]
    assert identical["seconds_spice"] < 0.5


def test_spice_failure_is_recorded_not_raised(hand_bleu):
    assert hand_bleu["spice"] is None
    assert hand_bleu["spice_status"].startswith("unavailable: RuntimeError")
    assert "simulated SPICE failure" in hand_bleu["spice_status"]
    assert hand_bleu["jvm_starts"] == 3  # tokenizer + METEOR + the attempted SPICE


def test_jvm_starts_do_not_grow_with_samples(identical, with_newlines):
    assert identical["jvm_starts"] == with_newlines["jvm_starts"] == 2  # tokenizer + METEOR
    for key in ("seconds_tokenize", "seconds_bleu", "seconds_meteor", "seconds_rouge", "seconds_cider"):
        assert identical[key] >= 0


def test_meteor_hang_becomes_timeout_error_and_kills_java(monkeypatch):
    from pycocoevalcap.meteor.meteor import Meteor

    release, scorers = threading.Event(), []

    def hang(self, gts, res):
        scorers.append(self)
        release.wait(30)
        return 0.0, []

    monkeypatch.setattr(Meteor, "compute_score", hang)
    monkeypatch.setattr(tm, "_tokenize", lambda sentences, timeout_s: [s.lower() for s in sentences])
    start = time.monotonic()
    try:
        with pytest.raises(TimeoutError, match="METEOR"):
            tm.score_explanations({"a": "a dog"}, {"a": ["a dog"]}, timeout_s=1.0, spice=False)
    finally:
        release.set()
    assert time.monotonic() - start < 5
    assert len(scorers) == 1
    proc = scorers[0].meteor_p
    assert proc.poll() is not None  # the METEOR JVM was killed and reaped
    with pytest.raises(ProcessLookupError):
        os.kill(proc.pid, 0)


def test_tokenizer_hang_becomes_timeout_error_and_kills_child(monkeypatch, tmp_path):
    pid_file = tmp_path / "pid"
    hang = f"import os, time\nopen({str(pid_file)!r}, 'w').write(str(os.getpid()))\ntime.sleep(30)\n"
    monkeypatch.setattr(tm, "_TOKENIZE_CHILD", hang)
    start = time.monotonic()
    with pytest.raises(TimeoutError, match="PTBTokenizer"):
        tm.score_explanations({"a": "a dog"}, {"a": ["a dog"]}, timeout_s=1.0, spice=False)
    assert time.monotonic() - start < 5
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid_file.read_text()), 0)


# ----------------------------------------------------------------------------- CLIPScore


def test_clip_score_hand_computed():
    image = torch.tensor([[3.0, 4.0], [1.0, 0.0], [1.0, 1.0]])
    text = torch.tensor([[4.0, 3.0], [-1.0, 0.0], [2.0, 2.0]])
    # cos: (12 + 12) / (5 * 5) = 0.96; -1 -> clamped to 0; 1
    expected = torch.tensor([2.5 * 0.96, 0.0, 2.5])
    assert torch.allclose(tm.clip_score(image, text), expected, atol=1e-6)
    assert tm.clip_score(torch.tensor([0.0, 2.0]), torch.tensor([0.0, 5.0])).item() == pytest.approx(2.5)


def test_clip_scores_with_tiny_random_clip():
    from transformers import CLIPConfig, CLIPModel

    from megl.models.tokenizer import train_tokenizer

    tok = train_tokenizer(["a photo depicts a dog on the grass", "a cat sleeps"] * 5, vocab_size=80)
    torch.manual_seed(0)
    model = CLIPModel(CLIPConfig(
        text_config={"vocab_size": len(tok), "hidden_size": 32, "intermediate_size": 64,
                     "num_hidden_layers": 1, "num_attention_heads": 2, "max_position_embeddings": 16},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                       "num_attention_heads": 2, "image_size": 16, "patch_size": 8},
        projection_dim=16,
    ))
    pixels = torch.rand(3, 3, 24, 20)  # resized + centre-cropped to 16x16 inside
    long_text = "a dog " * 40  # longer than the text model: truncated, not an error
    scores = tm.clip_scores(model, tok, pixels, ["a dog on the grass", "", long_text])
    assert len(scores) == 3
    assert all(isinstance(s, float) and 0.0 <= s <= 2.5 for s in scores)
    assert model.training  # the caller's train/eval mode is restored


def test_meteor_crash_is_a_clear_error(monkeypatch):
    from pycocoevalcap.meteor.meteor import Meteor

    original = Meteor.compute_score

    def crash(self, gts, res):
        self.meteor_p.kill()  # the JVM dies mid-evaluation
        self.meteor_p.wait()
        return original(self, gts, res)

    monkeypatch.setattr(Meteor, "compute_score", crash)
    monkeypatch.setattr(tm, "_tokenize", lambda sentences, timeout_s: [s.lower() for s in sentences])
    with pytest.raises(RuntimeError, match="METEOR failed"):
        tm.score_explanations({"a": "a dog"}, {"a": ["a dog"]}, timeout_s=10.0, spice=False)
