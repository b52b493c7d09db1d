"""Reference sentence embeddings for RBoN-WD (tests/fixtures/embeddings/*.json).

sentence-transformers' all-MiniLM-L6-v2 is Transformer -> Pooling(mean) -> Normalize: the last
hidden states averaged over the attention mask (sum(h * m) / clamp(sum(m), 1e-9)), then
F.normalize (L2, eps 1e-12). This computes exactly that with transformers' BertModel, float32,
all texts in one right-padded batch, for the tiny BERT fixture (always in the repo) and, when
assets/ holds it, the real MiniLM (truncation 256, its max_seq_length).

Run with the PyTorch reference venv: /work/pyref/venv/bin/python scripts/make_embedding_fixture.py
"""
import json
import os
import sys

import torch
import torch.nn.functional as F
from transformers import AutoTokenizer, BertModel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEXTS = [
    "A gripping, beautifully shot film.",
    "Dull.",
    "The plot never quite comes together, but the lead performance is superb and worth the ticket.",
    "I would not watch this again, even for free!",
    "An ok movie",
]


def embed(folder, max_length):
    tok = AutoTokenizer.from_pretrained(folder)
    model = BertModel.from_pretrained(folder, add_pooling_layer=False).float().eval()
    batch = tok(TEXTS, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    with torch.no_grad():
        h = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    m = batch["attention_mask"].unsqueeze(-1).float()
    mean = (h * m).sum(1) / torch.clamp(m.sum(1), min=1e-9)
    unit = F.normalize(mean, p=2, dim=1)
    ids = [[int(t) for t, k in zip(row, mask) if k] for row, mask in zip(batch["input_ids"], batch["attention_mask"])]
    return {"texts": TEXTS, "max_length": max_length, "input_ids": ids, "embeddings": unit.tolist(),
            "cosine": (unit @ unit.T).tolist()}


def main():
    out_dir = os.path.join(ROOT, "tests/fixtures/embeddings")
    os.makedirs(out_dir, exist_ok=True)
    cases = [("tiny-bert.json", os.path.join(ROOT, "tests/fixtures/hf/tiny-bert-rm"), 128)]
    minilm = os.path.join(ROOT, "assets/all-MiniLM-L6-v2")
    if os.path.isdir(minilm):
        cases.append(("minilm.json", minilm, 256))
    else:
        print(f"{minilm} missing: only the tiny fixture", file=sys.stderr)
    for name, folder, max_length in cases:
        ref = embed(folder, max_length)
        ref["model"] = os.path.relpath(folder, ROOT)
        ref["versions"] = {"torch": torch.__version__, "transformers": __import__("transformers").__version__}
        with open(os.path.join(out_dir, name), "w") as f:
            json.dump(ref, f)
        print(name, len(ref["embeddings"][0]), "dims")


if __name__ == "__main__":
    main()
