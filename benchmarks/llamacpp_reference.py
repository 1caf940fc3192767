"""Reference outputs of SmolLM2-135M-Instruct's GGUF from its own runtime, llama.cpp, for the
converter test (tests/test_weights_smollm2.py) to compare the converted transformers model with.

llama-cpp-python is a 20-minute source build, so it is not a dependency: this script ran once in
a throw-away venv and its output is committed (tests/data/smollm2_llamacpp.json):
    python3 -m venv /tmp/lcpp && /tmp/lcpp/bin/pip install llama-cpp-python==0.3.36
    /tmp/lcpp/bin/python benchmarks/llamacpp_reference.py GGUF_FILE > tests/data/smollm2_llamacpp.json
"""

import json
import sys

import numpy as np
from llama_cpp import Llama

# A plain chat turn, as the text head's prompts are built (megl.models.sdtg).
PROMPT = (
    "<|im_start|>user\nWhat colour is a ripe banana? Answer in one word.<|im_end|>\n"
    "<|im_start|>assistant\n"
)
TOP_K = 20
NEW_TOKENS = 8


def main(gguf: str) -> None:
    llm = Llama(model_path=gguf, n_ctx=256, n_threads=2, logits_all=True, verbose=False, seed=0)
    ids = llm.tokenize(PROMPT.encode(), add_bos=False, special=True)
    llm.eval(ids)
    last = np.asarray(llm.scores[len(ids) - 1], dtype=np.float64)
    top = np.argsort(-last)[:TOP_K]
    greedy = []
    for _ in range(NEW_TOKENS):
        nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        greedy.append(nxt)
        llm.eval([nxt])
    json.dump(
        {
            "runtime": "llama-cpp-python 0.3.36 (CPU, 2 threads)",
            "prompt": PROMPT,
            "prompt_ids": [int(i) for i in ids],
            "top_ids": [int(i) for i in top],
            "top_logits": [round(float(last[i]), 4) for i in top],
            "greedy_ids": greedy,
            "greedy_text": llm.detokenize(greedy).decode(errors="replace"),
        },
        sys.stdout,
        indent=1,
    )
    print()


if __name__ == "__main__":
    main(sys.argv[1])
