#!/usr/bin/env python3
"""PyTorch + transformers counterpart of `rmtrain bench train|score --data F.jsonl`.

One pass over real preference pairs, as TRL's RewardTrainer trains a reward model: chosen and
rejected texts of a batch of B pairs in one forward, padded to the batch's longest text (dynamic
padding), loss -logsigmoid(r_c - r_r).mean(), backward, clip_grad_norm_ 1.0, fused AdamW, fp32,
dropout off (as ../shared/bench/rm_step_bench.py). Order: a seeded shuffle, or with
--group-by-length transformers' megabatches of 50 batches sorted by pair length (longest first).
Scoring: 2B texts per batch, in file order or (--group-by-length) sorted by length.
The first --warmup batches run untimed before the timed pass. Prints one JSON line.

    python scripts/bench_torch_pairs.py --model pyref/minilm-rm --data data/vader/movie.mean.train.jsonl \
        --limit 3000 --batch 16 --mode train
"""
import argparse
import json
import os
import resource
import sys
import time


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="HF folder (a sequence classifier with num_labels=1, or a bare encoder)")
    p.add_argument("--data", required=True, help="pair JSONL with 'chosen' and 'rejected' texts")
    p.add_argument("--limit", type=int, default=None, help="only the first N pairs")
    p.add_argument("--batch", type=int, default=16, help="pairs per step")
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mode", choices=["train", "score"], default="train")
    p.add_argument("--group-by-length", action="store_true")
    return p.parse_args()


def read_pairs(path, limit):
    pairs = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            if not isinstance(row.get("chosen"), str) or not isinstance(row.get("rejected"), str):
                sys.exit(f"{path}:{n}: needs string fields 'chosen' and 'rejected'")
            pairs.append((row["chosen"], row["rejected"]))
            if limit is not None and len(pairs) == limit:
                break
    if not pairs:
        sys.exit(f"{path}: no pairs")
    return pairs


def main():
    args = parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch
    import transformers
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    transformers.logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=1)
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    pairs = read_pairs(args.data, args.limit)
    enc = lambda texts: tok(texts, truncation=True, max_length=args.max_length, padding=False)["input_ids"]
    chosen, rejected = enc([c for c, _ in pairs]), enc([r for _, r in pairs])
    cfg = model.config
    h, inter, layers = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers

    def fwd_flops(length):  # the analytic count of rm_step_bench.py, per sequence
        return layers * length * (2 * (4 * h * h + 2 * h * inter) + 2 * (2 * length * h)) + 2 * h * h + 2 * h

    def collate(rows):
        longest = max(len(r) for r in rows)
        ids = torch.full((len(rows), longest), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), longest), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = 1
        return ids, mask, sum(len(r) for r in rows), len(rows) * longest, sum(fwd_flops(longest) for _ in rows)

    g = torch.Generator().manual_seed(args.seed)
    if args.mode == "train":
        order = torch.randperm(len(pairs), generator=g).tolist()
        if args.group_by_length:
            mega = 50 * args.batch
            length = lambda i: max(len(chosen[i]), len(rejected[i]))
            order = [i for k in range(0, len(order), mega) for i in sorted(order[k : k + mega], key=length, reverse=True)]
        batches = [order[k : k + args.batch] for k in range(0, len(order), args.batch)]
    else:
        texts = [t for c, r in zip(chosen, rejected) for t in (c, r)]
        order = list(range(len(texts)))
        if args.group_by_length:
            order.sort(key=lambda i: len(texts[i]))
        batches = [order[k : k + 2 * args.batch] for k in range(0, len(order), 2 * args.batch)]

    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.01, fused=True)
    totals = dict(pairs=0.0, tokens=0, padded=0, flops=0.0)
    schedule = batches[: args.warmup] + batches
    cpu0 = None
    for step, batch in enumerate(schedule):
        if step == args.warmup:
            t0, cpu0 = time.perf_counter(), os.times()
        timed = step >= args.warmup
        if args.mode == "train":
            model.train()
            ids, mask, tokens, padded, flops = collate([chosen[i] for i in batch] + [rejected[i] for i in batch])
            r = model(input_ids=ids, attention_mask=mask).logits.squeeze(-1)
            n = len(batch)
            loss = -torch.nn.functional.logsigmoid(r[:n] - r[n:]).mean()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            _ = loss.item()
            pairs_done, flops = n, 3 * flops
        else:
            model.eval()
            ids, mask, tokens, padded, flops = collate([texts[i] for i in batch])
            with torch.inference_mode():
                _ = model(input_ids=ids, attention_mask=mask).logits.sum().item()
            pairs_done = len(batch) / 2
        if timed:
            totals["pairs"] += pairs_done
            totals["tokens"] += tokens
            totals["padded"] += padded
            totals["flops"] += flops
    seconds = time.perf_counter() - t0
    cpu1 = os.times()
    own_cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    print(json.dumps({
        "bench": f"torch_pairs_{args.mode}", "model": args.model, "data": args.data, "batch_pairs": args.batch,
        "group_by_length": args.group_by_length, "seed": args.seed, "threads": args.threads,
        "torch": torch.__version__, "transformers": transformers.__version__,
        "seconds": seconds, "pairs": totals["pairs"], "pairs_per_s": totals["pairs"] / seconds,
        "tokens_per_s": totals["tokens"] / seconds, "padded_tokens_per_s": totals["padded"] / seconds,
        "pad_fraction": 1 - totals["tokens"] / totals["padded"], "gflops_per_s": totals["flops"] / seconds / 1e9,
        "cpu_utilisation": own_cpu / seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "loadavg": open("/proc/loadavg").read().split()[:3],
    }))


if __name__ == "__main__":
    main()
