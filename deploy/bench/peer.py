"""SparkMoE against transformers (+PEFT) on the same machine, the same windows and the same shapes, in one run.

  python3 deploy/bench/peer.py --model DIR --eval-data FILE[,FILE...] --train-data FILE [options]

For eval, both sides score every window of --window tokens of the --split of each file (the perplexity protocol of
docs/data.md: the file is split by code points, tokenized with the model's tokenizer.json without special tokens,
cut into non-overlapping windows, positions 1..S-1 scored), --batch-windows windows per forward. transformers runs
the model in float32 as loaded (its default attention), torch with --threads threads; SparkMoE runs
`sparkmoe eval` on the embedded local[--threads] master. The timed parts: transformers' forwards (tokenizing and
loading the model left out), and the time `sparkmoe eval` reports for its Spark job (JVM and Spark start left out;
the tokenizing of inputs up to 16 MiB and a small model's load and warm-up run while Spark starts, so they count in
that time only where they outlast Spark's start). Each eval line also gives the end-to-end seconds, and their
ratio: transformers from this script's start (importing torch and transformers, tokenizing, loading, the forwards),
SparkMoE the eval command's wall time (the launcher's plan JVM, the JVM's and Spark's start, the job, the report).

For train, both sides train a LoRA (--rank, --alpha) on the experts' w1, w2 and w3 with AdamW (--lr, no weight
decay, gradient clipping at 1.0, the model's load-balancing loss at config.json's router_aux_loss_coef) for --steps
steps of --batch-windows windows per partition times --partitions partitions, on windows of the --train-split of
--train-data. PEFT takes one optimiser step per batch of partitions × batch-windows windows; SparkMoE takes one per
partition and averages every round (F = 1; --averaging gradients: one step on the partitions' mean gradient), so
the loss curves are alike, not equal, and the windows each step sees
differ (SparkMoE's seeded sampler); loss_curve.py trains the same LoRA on the same windows on both sides and shows
the curves equal. transformers' time is its steps after the first (the first includes allocator
warm-up); SparkMoE's is the sum of its rounds after the first, from train-log.jsonl.

Prints one line per measurement and the ratios SparkMoE / transformers (above 1: SparkMoE is faster). With
--repeats N each side runs N times, alternated (transformers, SparkMoE, transformers, ...), and the summary line gives
each side's median tokens/s, their ratio and the lowest ratio of a pair. transformers repeats in the same process on
the same loaded model for eval (train loads it again for each run), so its later eval runs are warm (10% faster on
the tiny eval here); each SparkMoE run is a new command, cold: the repeats favour transformers.
Needs torch, transformers and peft (a venv from the local package index; see docs/benchmarks.md#against-transformers).
"""
import time

STARTED = time.perf_counter()  # before torch and transformers are imported: their import counts in the end to end

import argparse
import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile

import torch
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM

SPLITS = {"train": (0, 90), "valid": (90, 95), "test": (95, 100), "all": (0, 100)}


def split_text(text, split):
    """docs/data.md: floor(n*90/100) and floor(n*95/100) in code points (a Python str indexes code points)."""
    lo, hi = SPLITS[split]
    n = len(text)
    return text[n * lo // 100:n * hi // 100]


def windows_of(model_dir, path, split, window):
    """[N, window] int64: the split's tokens in non-overlapping windows, the remainder dropped."""
    tokenizer = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    with open(path, encoding="utf-8") as f:
        ids = tokenizer.encode(split_text(f.read(), split), add_special_tokens=False).ids
    n = len(ids) // window
    return torch.tensor(ids[:n * window], dtype=torch.long).view(n, window)


def load_model(model_dir):
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    return model


def hf_eval(model, windows, batch):
    """(nll_sum, scored tokens, seconds) over every window, positions 1..S-1 scored."""
    model.eval()
    nll = 0.0
    start = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, windows.shape[0], batch):
            ids = windows[i:i + batch]
            logits = model(input_ids=ids).logits[:, :-1].float()
            logp = torch.log_softmax(logits, dim=-1)
            nll -= logp.gather(-1, ids[:, 1:, None]).double().sum().item()
    seconds = time.perf_counter() - start
    return nll, windows.shape[0] * (windows.shape[1] - 1), seconds


def hf_train(model, windows, args):
    """[(step, loss)], tokens per step, seconds of the steps after the first."""
    from peft import LoraConfig, get_peft_model
    model.config.output_router_logits = True  # the load-balancing loss, as SparkMoE trains with it
    # the experts' three projections by their module names: Mixtral's w1/w3/w2, the other families' gate/up/down
    # (PEFT on transformers 5 maps either to the fused expert tensors)
    names = ["w1", "w2", "w3"] if model.config.model_type == "mixtral" else ["gate_proj", "up_proj", "down_proj"]
    model = get_peft_model(model, LoraConfig(r=args.rank, lora_alpha=args.alpha, lora_dropout=0.0,
                                             target_modules=names))
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(trainable, lr=args.lr, weight_decay=0.0)
    per_step = args.batch_windows * args.partitions
    generator = torch.Generator().manual_seed(args.seed)
    order = torch.randperm(windows.shape[0], generator=generator)
    losses, seconds = [], 0.0
    for step in range(args.steps):
        pick = order[torch.arange(step * per_step, (step + 1) * per_step) % windows.shape[0]]
        ids = windows[pick]
        start = time.perf_counter()
        out = model(input_ids=ids, labels=ids)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimiser.step()
        optimiser.zero_grad(set_to_none=True)
        if step > 0:
            seconds += time.perf_counter() - start
        losses.append((step + 1, out.loss.item()))
    return losses, per_step * windows.shape[1], seconds, sum(p.numel() for p in trainable)


def sparkmoe(args, *command):
    """The command's stderr and its wall seconds (JVM starts, Spark's start, the job, the outputs)."""
    env = dict(os.environ)
    start = time.perf_counter()
    run = subprocess.run([args.sparkmoe, *command, "--master", f"local[{args.threads}]"], env=env,
                         capture_output=True, text=True)
    if run.returncode != 0:
        sys.exit(f"peer: sparkmoe {command[0]} failed (exit {run.returncode}):\n{run.stderr[-3000:]}")
    return run.stderr, time.perf_counter() - start


def ours_eval(args, files):
    with tempfile.TemporaryDirectory() as tmp:
        report = os.path.join(tmp, "report.json")
        err, wall = sparkmoe(args, "eval", "--model", args.model, "--data", ",".join(files), "--split", args.split,
                       "--window", str(args.window), "--batch-windows", str(args.batch_windows),
                       "--partitions", str(args.threads), "--out", report)
        with open(report) as f:
            result = json.load(f)["all"]
    # the job's seconds from its tokens/s, which the command computes before rounding the seconds it prints to 0.1
    m = re.search(r"eval: (\d+) scored tokens in [0-9.]+ s \((\d+) tokens/s\)", err)
    return result["nll_sum"], result["tokens"], int(m.group(1)) / int(m.group(2)), wall


def ours_train(args):
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "train")
        sparkmoe(args, "train", "--model", args.model, "--data", args.train_data, "--split", args.train_split,
                 "--window", str(args.window), "--batch-windows", str(args.batch_windows), "--steps", str(args.steps),
                 "--partitions", str(args.partitions), "--lr", str(args.lr), "--rank", str(args.rank),
                 "--alpha", str(args.alpha), "--seed", str(args.seed), "--checkpoint-every", str(args.steps + 1),
                 "--averaging", args.averaging, "--out", out)
        with open(os.path.join(out, "train-log.jsonl")) as f:
            rounds = [json.loads(line) for line in f if line.strip()]
    timed = rounds[1:]
    tokens = sum(r["tokens"] for r in timed)
    seconds = sum(r["round_s"] for r in timed)
    averaging = sum(r["averaging_s"] for r in timed)
    return [(r["step"], r["loss"]) for r in rounds], tokens, seconds, averaging


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--eval-data", help="comma-separated text files to score")
    p.add_argument("--split", default="test")
    p.add_argument("--train-data", help="text file to train on")
    p.add_argument("--train-split", default="valid")
    p.add_argument("--window", type=int, default=256)
    p.add_argument("--batch-windows", type=int, default=8, help="eval: windows per forward; train: per partition")
    p.add_argument("--partitions", type=int, default=2)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--alpha", type=float, default=32)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--averaging", choices=["parameters", "gradients"], default="parameters",
                   help="what SparkMoE's rounds average (train --averaging)")
    p.add_argument("--repeats", type=int, default=1, help="runs of each side, alternated")
    p.add_argument("--threads", type=int, default=2, help="torch threads; SparkMoE's local[N]")
    p.add_argument("--sparkmoe", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bin",
                                                         "sparkmoe"))
    args = p.parse_args()
    if args.repeats < 1:
        p.error(f"--repeats must be at least 1, got {args.repeats}")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    if args.eval_data:
        files = args.eval_data.split(",")
        windows = torch.cat([windows_of(args.model, f, args.split, args.window) for f in files])
        model = load_model(args.model)
        pairs = []
        for run in range(args.repeats):
            nll, tokens, seconds = hf_eval(model, windows, args.batch_windows)
            end_to_end = time.perf_counter() - STARTED
            print(f"eval transformers: {windows.shape[0]} windows, {tokens} tokens, ppl {math.exp(nll / tokens):.7g}, "
                  f"{seconds:.2f} s, {tokens / seconds:.0f} tokens/s" + ("" if run else f"; end to end {end_to_end:.2f} s"),
                  flush=True)
            o_nll, o_tokens, o_seconds, o_wall = ours_eval(args, files)
            print(f"eval sparkmoe:     {o_tokens} tokens, ppl {math.exp(o_nll / o_tokens):.7g}, {o_seconds:.2f} s, "
                  f"{o_tokens / o_seconds:.0f} tokens/s; end to end {o_wall:.2f} s", flush=True)
            print(f"eval ratio sparkmoe/transformers: {(o_tokens / o_seconds) / (tokens / seconds):.2f}x"
                  + ("" if run else f"; end to end {end_to_end / o_wall:.2f}x"), flush=True)
            pairs.append((tokens / seconds, o_tokens / o_seconds))
        del model                       # before train loads its own copy: a real shape's float32 model is GBs
        summarise("eval", pairs)
    if args.train_data:
        windows = windows_of(args.model, args.train_data, args.train_split, args.window)
        pairs = []
        for run in range(args.repeats):
            losses, per_step, seconds, params = hf_train(load_model(args.model), windows, args)
            hf_rate = per_step * (args.steps - 1) / seconds
            print(f"train transformers+peft: {params} LoRA parameters, {args.steps} steps of {per_step} tokens, "
                  f"loss {losses[0][1]:.4f} -> {losses[-1][1]:.4f}, {hf_rate:.0f} tokens/s", flush=True)
            o_losses, o_tokens, o_seconds, o_avg = ours_train(args)
            o_rate = o_tokens / o_seconds
            print(f"train sparkmoe: loss {o_losses[0][1]:.4f} -> {o_losses[-1][1]:.4f}, {o_rate:.0f} tokens/s, "
                  f"averaging {100 * o_avg / o_seconds:.1f}% of round time", flush=True)
            print("train loss per step (transformers+peft | sparkmoe): "
                  + ", ".join(f"{a:.3f}|{b:.3f}" for (_, a), (_, b) in zip(losses, o_losses)), flush=True)
            print(f"train ratio sparkmoe/transformers: {o_rate / hf_rate:.2f}x", flush=True)
            pairs.append((hf_rate, o_rate))
        summarise("train", pairs)


def summarise(work, pairs):
    """With more than one run: each side's median tokens/s, their ratio, and the lowest ratio of a pair."""
    if len(pairs) < 2:
        return
    theirs = statistics.median(p[0] for p in pairs)
    ours = statistics.median(p[1] for p in pairs)
    lowest = min(p[1] / p[0] for p in pairs)
    print(f"{work} over {len(pairs)} runs: transformers median {theirs:.0f} tokens/s, sparkmoe median {ours:.0f} "
          f"tokens/s, ratio of medians {ours / theirs:.2f}x, lowest pair {lowest:.2f}x", flush=True)


if __name__ == "__main__":
    main()
