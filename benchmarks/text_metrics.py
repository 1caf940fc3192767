"""Text metrics: one whole-split evaluation vs the same data scored in batches.

Synthetic explanations (deterministic templates, varied vocabulary): N hypotheses with R
references each. `score_explanations` runs once over the whole split (one tokenizer JVM, one
METEOR JVM); the comparison scores the same data in batches, paying the JVM start-ups once per
batch, and its CIDEr differs because CIDEr's document frequencies become batch-local: that is
why megl never batches text metrics. JVM start-up is also timed on its own (`java -version`,
PTBTokenizer on one sentence, METEOR start + one sentence). Prints one JSON object.

    .venv/bin/python benchmarks/text_metrics.py [--samples 2000] [--refs 3] [--batch 100]
"""

import argparse
import json
import random
import subprocess
import time

from megl.evaluate import text as tm

SUBJECTS = ["man", "woman", "boy", "girl", "chef", "player", "dog", "cat", "worker", "student",
            "musician", "tourist", "farmer", "rider", "child", "painter"]
ADJECTIVES = ["young", "old", "tall", "small", "happy", "tired", "busy", "smiling"]
ACTIONS = [("riding", "a bicycle"), ("cutting", "vegetables"), ("holding", "an umbrella"),
           ("throwing", "a frisbee"), ("reading", "a book"), ("playing", "a guitar"),
           ("kicking", "a ball"), ("carrying", "a bag"), ("painting", "a fence"),
           ("cooking", "pasta"), ("washing", "a car"), ("feeding", "the horses"),
           ("climbing", "a rock wall"), ("drinking", "coffee"), ("typing", "on a laptop")]
PLACES = ["in the park", "on the street", "in the kitchen", "on the beach", "near a river",
          "in a field", "at the station", "in the garden", "on a stage", "in the snow",
          "inside a shop", "under a tree"]
REASONS = ["because", "since", "as"]
EVIDENCE = ["the {o} is in their hands", "they are moving toward the {o}",
            "the {o} is right in front of them", "you can see the {o}", "there is a {o} nearby"]


def synthetic(samples: int, refs: int, seed: int = 0) -> tuple[dict[str, str], dict[str, list[str]]]:
    rng = random.Random(seed)
    hyps, references = {}, {}
    for i in range(samples):
        subject, adjective = rng.choice(SUBJECTS), rng.choice(ADJECTIVES)
        verb, obj = rng.choice(ACTIONS)
        place = rng.choice(PLACES)
        noun = obj.split()[-1]

        def sentence(r: random.Random) -> str:
            adj = f"{adjective} " if r.random() < 0.5 else ""
            where = f" {place}" if r.random() < 0.7 else ""
            why = f" {r.choice(REASONS)} {r.choice(EVIDENCE).format(o=noun)}" if r.random() < 0.6 else ""
            return f"a {adj}{subject} is {verb} {obj}{where}{why}"

        references[f"q{i}"] = [sentence(rng) for _ in range(refs)]
        hyp = sentence(rng)
        if rng.random() < 0.3:  # a wrong guess now and then: not every hypothesis matches
            other_verb, other_obj = rng.choice(ACTIONS)
            hyp = hyp.replace(f"{verb} {obj}", f"{other_verb} {other_obj}")
        hyps[f"q{i}"] = hyp
    return hyps, references


def jvm_start_costs() -> dict:
    t0 = time.perf_counter()
    subprocess.run(["java", "-version"], check=True, capture_output=True)
    java_version = time.perf_counter() - t0
    t0 = time.perf_counter()
    tm._tokenize(["A man is riding a horse."], timeout_s=60)
    tokenizer = time.perf_counter() - t0
    t0 = time.perf_counter()
    meteor = tm._meteor_class()()
    try:
        meteor.compute_score({"0": ["a man rides a horse"]}, {"0": ["a man is riding a horse"]})
    finally:
        meteor.close()
    return {
        "java_version": java_version,
        "ptb_tokenizer_one_sentence": tokenizer,
        "meteor_start_and_one_sentence": time.perf_counter() - t0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--refs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--no-batched", action="store_true", help="skip the batched comparison")
    args = parser.parse_args()
    hyps, refs = synthetic(args.samples, args.refs)
    seconds = ("tokenize", "bleu", "meteor", "rouge", "cider", "spice")

    t0 = time.perf_counter()
    whole = tm.score_explanations(hyps, refs)
    total = time.perf_counter() - t0
    result = {
        "samples": args.samples,
        "references_per_sample": args.refs,
        "seconds_total": total,
        "seconds_per_metric": {k: whole[f"seconds_{k}"] for k in seconds},
        "jvm_starts": whole["jvm_starts"],
        "jvm_start_seconds_measured_apart": jvm_start_costs(),
        "scores": {k: whole[k] for k in ("bleu_1", "bleu_4", "meteor", "rouge_l", "cider", "spice")},
        "spice_status": whole["spice_status"],
    }

    if not args.no_batched:
        ids = list(hyps)
        batches = [ids[i : i + args.batch] for i in range(0, len(ids), args.batch)]
        t0 = time.perf_counter()
        runs = [tm.score_explanations({k: hyps[k] for k in b}, {k: refs[k] for k in b}) for b in batches]
        batched_total = time.perf_counter() - t0
        weights = [len(b) / len(ids) for b in batches]
        cider_batched = sum(w * r["cider"] for w, r in zip(weights, runs))  # sample-weighted mean
        result["batched_comparison"] = {
            "batch_size": args.batch,
            "batches": len(batches),
            "seconds_total": batched_total,
            "slowdown_vs_whole_split": batched_total / total,
            "seconds_per_metric": {k: sum(r[f"seconds_{k}"] for r in runs) for k in seconds},
            "jvm_starts": sum(r["jvm_starts"] for r in runs),
            "cider_whole_split": whole["cider"],
            "cider_mean_of_batches": cider_batched,
            "cider_batch_min_max": [min(r["cider"] for r in runs), max(r["cider"] for r in runs)],
            "note": "CIDEr's document frequencies are batch-local when batched; never batch text metrics",
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
