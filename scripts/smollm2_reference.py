#!/usr/bin/env python3
"""Reference values for SmolLM2-135M-Instruct read from its GGUF by transformers (which rebuilds the
tokenizer from the metadata and dequantises the weights to f32): token ids of a few texts, the
ChatML prompt of one question and its 24-token greedy continuation. rmtrain's test
`smollm2_from_gguf_*` (tests/decoder.rs) compares against tests/fixtures/smollm2/reference.json.
Run from the repository root: python3 scripts/smollm2_reference.py  (needs torch, transformers,
gguf, accelerate; e.g. the ../shared/bench venv plus `pip install gguf accelerate`)."""
import json, os, sys, tempfile
import torch
from transformers import AutoTokenizer, AutoModelForCausalLM

torch.set_num_threads(2)
gguf = os.path.abspath("assets/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
d = tempfile.mkdtemp()
os.symlink(gguf, os.path.join(d, "model.gguf"))
tok = AutoTokenizer.from_pretrained(d, gguf_file="model.gguf")
texts = ["Hello world!", "The year 2024 was 12345 days?", "  spaces  and\ttabs\nnewline", "naïve café ☕ 日本語",
         "<|im_start|>user\nHi<|im_end|>\n", "don't I'll we've", "A movie review: it was great!!!"]
out = {"source": "transformers %s reading %s" % (__import__("transformers").__version__, os.path.basename(gguf)),
       "tokens": [{"text": t, "ids": tok(t)["input_ids"]} for t in texts]}
msgs = [{"role": "user", "content": "What is the capital of France?"}]
chat = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
ids = tok(chat, return_tensors="pt", add_special_tokens=False)["input_ids"]
model = AutoModelForCausalLM.from_pretrained(d, gguf_file="model.gguf", torch_dtype=torch.float32).eval()
with torch.no_grad():
    gen = model.generate(ids, max_new_tokens=24, do_sample=False)
out["chat"] = {"messages": msgs, "text": chat, "ids": ids[0].tolist(), "greedy_ids": gen[0, ids.shape[1]:].tolist(),
               "greedy_text": tok.decode(gen[0, ids.shape[1]:], skip_special_tokens=True)}
with open("tests/fixtures/smollm2/reference.json", "w") as f:
    json.dump(out, f, indent=1, ensure_ascii=False)
print(json.dumps(out, ensure_ascii=False)[:600])
