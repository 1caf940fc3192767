"""Text-explanation metrics: the COCO-caption suite (pycocoevalcap) and CLIPScore.

`score_explanations` scores a whole split in one evaluation:

1. every string is sanitised (`sanitize`): newlines, carriage returns, tabs and every other
   whitespace or control character become one space, `|` becomes a space, runs of spaces
   collapse, ends are stripped. Why: the Stanford PTBTokenizer treats form feeds and U+2028 as
   line breaks, and pycocoevalcap pairs its output lines with the inputs by position (`zip`), so
   one such character silently shifts every later sentence onto the wrong sample; a newline
   inside a METEOR line desynchronises its stdin/stdout protocol and deadlocks the next call;
   `|||` is METEOR's field separator.
2. an empty hypothesis (also one that is empty only after the tokenizer drops punctuation)
   becomes the placeholder token `EMPTY_HYPOTHESIS` ("xxempty"), a word that matches no English
   reference, so it scores ~0 instead of crashing a scorer. Empty references are dropped; an id
   left without a reference is a ValueError.
3. all hypotheses and references are tokenised by pycocoevalcap's `PTBTokenizer` in ONE call
   (one JVM start), then Bleu(4), Meteor, Rouge and Cider each run once over the whole split.
   CIDEr (pycocoevalcap's is CIDEr-D) takes its document frequencies and its log(#samples) from
   the set it is given, so scoring batches separately gives different, wrong numbers: never batch.
4. SPICE runs only when asked and when its Stanford CoreNLP 3.6.0 jars are already in
   pycocoevalcap's `spice/lib` (pycocoevalcap would otherwise download them, which must never
   happen here); any SPICE failure is recorded in `spice_status`, never raised.

Every Java call is guarded by `timeout_s`; a hang raises `TimeoutError` (SPICE: recorded as
unavailable) and the Java process is killed. Two mechanisms, chosen per scorer:

- PTBTokenizer and SPICE are one-shot Java programs that pycocoevalcap starts without a timeout
  and without giving us the process handle. They run inside a child Python process started in
  its own session (process group); on timeout the whole group (Python + Java) is killed, so
  nothing is left behind. The child costs ~0.1 s, negligible next to the JVM.
- METEOR is a long-lived Java process owned by pycocoevalcap's `Meteor` object (`meteor_p`);
  scoring is a blocking readline on its stdout. It runs in a daemon worker thread joined with
  the timeout; on timeout the Java process is killed (which also unblocks the thread's
  readline) and `TimeoutError` is raised. pycocoevalcap 1.2's `Meteor.__del__` takes the scorer
  lock, which a failed compute leaves held, so garbage collection itself could deadlock:
  `_ClosableMeteor.close()` / `__del__` shut the process down without that lock.

pycocoevalcap writes temporary files into its own package folder (tokenizer/, spice/tmp,
spice/cache): the installed package must be writable.

CLIPScore (Hessel et al. 2021): `clip_score` / `clip_scores`. The numbers are only comparable
with the paper (and other CLIPScore reports) when computed with the CLIP ViT-B/32 weights; name
the CLIP used next to every number.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import threading
import time
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:  # torch is imported lazily: the caption metrics do not need it
    import torch

EMPTY_HYPOTHESIS = "xxempty"
SPICE_JARS = ("stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar")
CLIP_PROMPT = "A photo depicts "
# OpenAI CLIP's preprocessing statistics (used when no image processor is given).
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

T = TypeVar("T")


# ----------------------------------------------------------------------------- sanitising


def sanitize(text: Any) -> str:
    """One line of plain text: whitespace/control characters and `|` -> one space, stripped."""
    chars = []
    for ch in str(text):
        if ch == "|" or ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp"):
            chars.append(" ")
        else:
            chars.append(ch)
    return " ".join("".join(chars).split())


def _inputs(hypotheses: Mapping[str, str], references: Mapping[str, Sequence[str]]):
    if not hypotheses:
        raise ValueError("no hypotheses to score")
    ids = list(hypotheses)
    hyps, refs = [], []
    for sample_id in ids:
        given = references.get(sample_id)
        if isinstance(given, str):
            given = [given]
        cleaned = [r for r in (sanitize(x) for x in (given or [])) if r]
        if not cleaned:
            raise ValueError(f"hypothesis id {sample_id!r} has no (non-empty) reference")
        hyps.append(sanitize(hypotheses[sample_id]) or EMPTY_HYPOTHESIS)
        refs.append(cleaned)
    return ids, hyps, refs


# ------------------------------------------------------------------- guarded Java calls

# Runs inside the child: its fd 1 is pointed at stderr so that anything Java or pycocoevalcap
# prints cannot corrupt the JSON answer, which goes to a private duplicate of the real stdout.
_CHILD_PRELUDE = r"""
import json, os, sys
_answer = os.fdopen(os.dup(1), "w")
os.dup2(2, 1)
sys.stdout = sys.stderr
payload = json.load(sys.stdin)
"""

_TOKENIZE_CHILD = _CHILD_PRELUDE + r"""
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer
sentences = payload
out = PTBTokenizer().tokenize({i: [{"caption": s}] for i, s in enumerate(sentences)})
if sorted(out) != list(range(len(sentences))):
    sys.exit(f"PTBTokenizer returned {len(out)} lines for {len(sentences)} sentences")
json.dump([out[i][0] for i in range(len(sentences))], _answer)
"""

_SPICE_CHILD = _CHILD_PRELUDE + r"""
from pycocoevalcap.spice.spice import Spice
score, _ = Spice().compute_score(payload["gts"], payload["res"])
json.dump({"spice": float(score)}, _answer)
"""


def _run_child(code: str, payload: Any, timeout_s: float, what: str) -> Any:
    """Run `code` in a child Python (own process group) fed `payload` as JSON; kill on timeout."""
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(json.dumps(payload).encode(), timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        raise TimeoutError(
            f"{what} did not finish within {timeout_s:g} s; its Java process was killed"
        ) from None
    except BaseException:
        _kill_group(proc)
        raise
    if proc.returncode != 0:
        tail = err.decode(errors="replace").strip()[-2000:]
        raise RuntimeError(f"{what} failed (exit {proc.returncode}): {tail}")
    return json.loads(out)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the child's own session: it and its Java
    except (ProcessLookupError, PermissionError):
        pass
    proc.communicate()


def _in_thread(fn: Callable[[], T], timeout_s: float, what: str, on_timeout: Callable[[], None]) -> T:
    """Run fn in a daemon thread; if it is still running after timeout_s, on_timeout() + raise."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed to the caller (or dropped after a timeout)
            box["error"] = exc

    worker = threading.Thread(target=target, name=f"megl-{what}", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        on_timeout()
        worker.join(1.0)  # a blocked readline returns once the process is gone
        raise TimeoutError(f"{what} did not finish within {timeout_s:g} s; its Java process was killed")
    if "error" in box:
        raise box["error"]
    return box["value"]


@functools.cache
def _meteor_class():
    from pycocoevalcap.meteor.meteor import Meteor

    class _ClosableMeteor(Meteor):
        """pycocoevalcap's Meteor with an idempotent close() that never takes the scorer lock."""

        def close(self, *, stderr: bool = False) -> str:
            """Kill and reap the Java process (idempotent); optionally return its stderr tail."""
            proc = getattr(self, "meteor_p", None)
            if proc is None or getattr(self, "_closed", False):
                return ""
            self._closed = True
            if proc.poll() is None:
                proc.kill()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            err = ""
            if stderr and proc.stderr is not None:
                try:  # the process is gone, so this read ends at EOF
                    err = proc.stderr.read().decode(errors="replace").strip()[-2000:]
                except (OSError, ValueError):
                    pass
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                try:
                    if stream is not None:
                        stream.close()
                except (OSError, ValueError):  # BrokenPipe on a pending write to a dead process
                    pass
            return err

        def __del__(self) -> None:
            self.close()

    return _ClosableMeteor


def _tokenize(sentences: list[str], timeout_s: float) -> list[str]:
    return _run_child(_TOKENIZE_CHILD, sentences, timeout_s, "PTBTokenizer")


def _spice_lib_dir() -> Path:
    import pycocoevalcap.spice

    return Path(next(iter(pycocoevalcap.spice.__path__))) / "lib"


def missing_spice_jars() -> list[str]:
    """The Stanford CoreNLP jars SPICE needs that are not in pycocoevalcap's spice/lib."""
    lib = _spice_lib_dir()
    return [name for name in SPICE_JARS if not (lib / name).is_file()]


# ----------------------------------------------------------------------------- scoring


def start_meteor():
    """A METEOR scorer whose JVM starts now: it spends ~6 s loading its paraphrase table, which
    overlaps whatever the caller does before score_explanations(..., meteor=this). The caller
    closes it (close() is idempotent; score_explanations closes it too)."""
    return _meteor_class()()


def score_explanations(
    hypotheses: dict[str, str],
    references: dict[str, list[str]],
    *,
    timeout_s: float = 120.0,
    spice: bool = True,
    meteor=None,
) -> dict:
    """Score generated explanations against references over a whole split, in one evaluation.

    hypotheses: {sample_id: text}; references: {sample_id: [text, ...]} with >= 1 reference per
    hypothesis id (references of other ids are ignored). timeout_s bounds every Java call
    (tokenizer, METEOR, SPICE). `meteor`: a scorer from start_meteor() (else one starts here).
    BLEU is pycocoevalcap's corpus BLEU ("closest" reference length), METEOR its corpus
    aggregate, ROUGE-L and CIDEr(-D) means over samples.

    Returns a flat dict: bleu_1..bleu_4, meteor, rouge_l, cider, spice (None when not run),
    spice_status ("ok" / "unavailable: <reason>"), text_samples, seconds_tokenize,
    seconds_bleu, seconds_meteor (includes its JVM start), seconds_rouge, seconds_cider,
    seconds_spice, jvm_starts.
    """
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    ids, hyps, refs = _inputs(hypotheses, references)
    jvm_starts = 0
    seconds: dict[str, float] = {}

    # One tokenizer call for everything: hypotheses first, then all references in order.
    t0 = time.perf_counter()
    flat = hyps + [r for rs in refs for r in rs]
    jvm_starts += 1  # the tokenizer child starts exactly one JVM
    tokens = [t or EMPTY_HYPOTHESIS for t in _tokenize(flat, timeout_s)]
    seconds["tokenize"] = time.perf_counter() - t0
    keys = [str(i) for i in range(len(ids))]  # positional keys: any id type, JSON-safe for SPICE
    res = {k: [tokens[i]] for i, k in enumerate(keys)}
    gts, pos = {}, len(hyps)
    for k, rs in zip(keys, refs):
        gts[k] = tokens[pos : pos + len(rs)]
        pos += len(rs)

    t0 = time.perf_counter()
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    seconds["bleu"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    meteor_scorer = meteor if meteor is not None else start_meteor()
    jvm_starts += 1
    try:
        meteor, _ = _in_thread(
            lambda: meteor_scorer.compute_score(gts, res), timeout_s, "METEOR", meteor_scorer.close
        )
    except TimeoutError:
        raise
    except Exception as exc:  # e.g. Java died: pycocoevalcap then fails parsing an empty line
        raise RuntimeError(f"METEOR failed: {exc!r}; java stderr: {meteor_scorer.close(stderr=True)}") from exc
    finally:
        meteor_scorer.close()
    seconds["meteor"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    rouge, _ = Rouge().compute_score(gts, res)
    seconds["rouge"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    cider, _ = Cider().compute_score(gts, res)
    seconds["cider"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    spice_score: float | None = None
    if not spice:
        spice_status = "unavailable: disabled (spice=False)"
    elif missing := missing_spice_jars():
        spice_status = (
            # no absolute path here: the status is stored in committed metrics and must not depend on the clone
            f"unavailable: Stanford CoreNLP jars missing from pycocoevalcap/spice/lib "
            f"({', '.join(missing)}); pycocoevalcap would download them, which is not allowed"
        )
    else:
        jvm_starts += 1
        try:
            spice_score = float(_run_child(_SPICE_CHILD, {"gts": gts, "res": res}, timeout_s, "SPICE")["spice"])
            spice_status = "ok"
        except Exception as exc:  # noqa: BLE001 - SPICE is optional by design; never fail the run
            spice_status = f"unavailable: {type(exc).__name__}: {exc}"
    seconds["spice"] = time.perf_counter() - t0

    out: dict[str, Any] = {f"bleu_{n + 1}": float(b) for n, b in enumerate(bleu)}
    out |= {"meteor": float(meteor), "rouge_l": float(rouge), "cider": float(cider)}
    out |= {"spice": spice_score, "spice_status": spice_status, "text_samples": len(ids)}
    out |= {f"seconds_{name}": seconds[name] for name in ("tokenize", "bleu", "meteor", "rouge", "cider", "spice")}
    out["jvm_starts"] = jvm_starts
    return out


# ----------------------------------------------------------------------------- CLIPScore


def clip_score(image_embeds: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
    """CLIPScore per pair (Hessel et al. 2021): 2.5 * max(cos(image, text), 0).

    image_embeds, text_embeds: (N, D) or (D,) -> (N,) or scalar, float32.
    """
    import torch.nn.functional as F

    if image_embeds.shape != text_embeds.shape:
        raise ValueError(f"embedding shapes differ: {tuple(image_embeds.shape)} vs {tuple(text_embeds.shape)}")
    img = F.normalize(image_embeds.float(), dim=-1)
    txt = F.normalize(text_embeds.float(), dim=-1)
    return 2.5 * (img * txt).sum(-1).clamp(min=0)


def _features(out: Any) -> torch.Tensor:
    """transformers < 5 returns the projected embeddings, >= 5 an output with pooler_output."""
    import torch

    return out if isinstance(out, torch.Tensor) else out.pooler_output


def _clip_pixels(pixels: torch.Tensor, size: int, mean, std) -> torch.Tensor:
    """[0, 1] floats (or uint8) (N, 3, H, W) -> CLIP input: short side resized, centre crop, normalised."""
    import torch
    import torch.nn.functional as F

    x = pixels.unsqueeze(0) if pixels.ndim == 3 else pixels
    x = x.float() / 255.0 if not x.is_floating_point() else x.float()
    h, w = x.shape[-2:]
    scale = size / min(h, w)
    new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
    if (new_h, new_w) != (h, w):
        x = F.interpolate(x, size=(new_h, new_w), mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    x = x[..., top : top + size, left : left + size]
    mean_t = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - mean_t) / std_t


def clip_scores(model, processor_or_tokenizer, pixel_values_unnormalised: torch.Tensor, texts: Sequence[str]) -> list[float]:
    """CLIPScore of each (image, text) pair with a transformers `CLIPModel`.

    pixel_values_unnormalised: (N, 3, H, W) in [0, 1] (uint8 is divided by 255), on any device;
    they are resized (short side, bicubic) and centre-cropped to the model's image size and
    normalised with the processor's mean/std (OpenAI CLIP's without a processor). texts are
    sanitised, prefixed with CLIP_PROMPT and truncated to the text model's length. Any
    tokenizer returning input_ids works (a CLIPProcessor: its .tokenizer is used).
    Only CLIP ViT-B/32 weights give numbers comparable with the paper; report which CLIP was used.
    """
    import torch

    if len(texts) != len(pixel_values_unnormalised):
        raise ValueError(f"{len(pixel_values_unnormalised)} images but {len(texts)} texts")
    tokenizer = getattr(processor_or_tokenizer, "tokenizer", processor_or_tokenizer)
    image_processor = getattr(processor_or_tokenizer, "image_processor", None)
    mean = getattr(image_processor, "image_mean", None) or OPENAI_CLIP_MEAN
    std = getattr(image_processor, "image_std", None) or OPENAI_CLIP_STD
    param = next(model.parameters())
    pixels = _clip_pixels(pixel_values_unnormalised.to(param.device), model.config.vision_config.image_size, mean, std)
    enc = tokenizer(
        [CLIP_PROMPT + sanitize(t) for t in texts],
        padding=True,
        truncation=True,
        max_length=model.config.text_config.max_position_embeddings,
        return_tensors="pt",
    )
    text_inputs = {"input_ids": enc["input_ids"].to(param.device)}
    if enc.get("attention_mask") is not None:
        text_inputs["attention_mask"] = enc["attention_mask"].to(param.device)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            image_embeds = _features(model.get_image_features(pixel_values=pixels.to(param.dtype)))
            text_embeds = _features(model.get_text_features(**text_inputs))
    finally:
        model.train(was_training)
    return clip_score(image_embeds, text_embeds).cpu().tolist()
