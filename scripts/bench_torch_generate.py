#!/usr/bin/env python3
"""PyTorch + transformers side of scripts/bench-generate-vs-pytorch.sh: SmolLM2 read from the same
GGUF (dequantised to f32 by transformers), greedy decoding of exactly NEW tokens per sequence (EOS
ignored) over the same chat prompts, left-padded batches of BATCH, 2 threads. Prints one JSON line:
tokens/s over the generate calls only (model load excluded), as `rmtrain generate` reports it.
Usage: bench_torch_generate.py GGUF PROMPTS.jsonl BATCH NEW"""
import json, os, sys, tempfile, time
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

gguf, prompts_file, batch, new = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(2)
d = tempfile.mkdtemp()
os.symlink(os.path.abspath(gguf), os.path.join(d, "model.gguf"))
tok = AutoTokenizer.from_pretrained(d, gguf_file="model.gguf")
tok.padding_side = "left"
model = AutoModelForCausalLM.from_pretrained(d, gguf_file="model.gguf", dtype=torch.float32).eval()
prompts = [json.loads(l)["prompt"] for l in open(prompts_file) if l.strip()]
texts = [tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True) for p in prompts]
# warm-up: one short call
with torch.no_grad():
    model.generate(**tok(texts[:1], return_tensors="pt", add_special_tokens=False), max_new_tokens=4, do_sample=False)
tokens, seconds = 0, 0.0
with torch.no_grad():
    for i in range(0, len(texts), batch):
        enc = tok(texts[i:i + batch], return_tensors="pt", padding=True, add_special_tokens=False)
        t0 = time.perf_counter()
        out = model.generate(**enc, max_new_tokens=new, min_new_tokens=new, do_sample=False, eos_token_id=None, pad_token_id=tok.pad_token_id)
        seconds += time.perf_counter() - t0
        tokens += (out.shape[1] - enc["input_ids"].shape[1]) * out.shape[0]
print(json.dumps({"impl": "pytorch", "batch": batch, "sequences": len(texts), "new_tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds}))
