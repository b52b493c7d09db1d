#!/usr/bin/env python3
"""Scores texts with an rmtrain reward checkpoint loaded by transformers
(AutoModelForSequenceClassification + AutoTokenizer from the folder, float32) and compares with the
rewards `rmtrain score` wrote. Exit status 1 when any reward differs by more than the tolerance.
Usage: check_rm_in_transformers.py MODEL_DIR SCORED.jsonl [TOL=1e-4]
SCORED.jsonl: `rmtrain score --model MODEL_DIR --input texts.jsonl` output (lines with text, reward)."""
import json, sys
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

model_dir, scored = sys.argv[1], sys.argv[2]
tol = float(sys.argv[3]) if len(sys.argv) > 3 else 1e-4
torch.set_num_threads(2)
tok = AutoTokenizer.from_pretrained(model_dir)
model = AutoModelForSequenceClassification.from_pretrained(model_dir, torch_dtype=torch.float32).eval()
max_length = json.load(open(f"{model_dir}/rmtrain.json")).get("train", {}).get("max_length", 128)
rows = [json.loads(l) for l in open(scored)]
worst = 0.0
with torch.no_grad():
    for r in rows:
        enc = tok(r["text"], return_tensors="pt", truncation=True, max_length=max_length)
        ref = model(**enc).logits[0, 0].item()
        worst = max(worst, abs(ref - r["reward"]))
print(json.dumps({"model": model_dir, "architecture": model.config.architectures, "texts": len(rows), "max_abs_diff": worst, "tolerance": tol}))
sys.exit(0 if worst <= tol else 1)
