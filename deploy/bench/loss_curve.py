"""The loss curve of `sparkmoe train` against the same LoRA trained in torch on transformers' model, step by step.

  python3 deploy/bench/loss_curve.py --model DIR --data FILE [options]

Both sides train the same thing from the same start on the same windows, so their losses must agree to float32 noise:
- the model: transformers' own, loaded in float32 (eager expert loop), its load-balancing loss at config.json's
  router_aux_loss_coef added to the cross-entropy (output_router_logits);
- the LoRA: one A/B pair per expert on each of the experts' gate (w1), up (w3) and down (w2) projections, scale
  --alpha / --rank, as SparkMoE trains it. PEFT on transformers 5 has no per-expert layout for the fused expert
  tensors (its target_parameters LoRA shares one A between gate and up and has a dense B), so the torch side is a
  per-expert LoRA written here over transformers' fused weights;
- the start: A drawn as SparkMoE draws it (Kaiming-uniform, a SplittableRandom seeded from --seed and the tensor's
  state key; the generator is re-implemented below and checked against java.util.SplittableRandom), B zero;
- the windows: the --split of --data cut into --window tokens (docs/data.md), window i dealt to partition
  i mod --partitions, each step's --batch-windows per partition chosen by SparkMoE's WindowSampler (re-implemented
  below);
- the optimiser: AdamW (no weight decay), clip of the global gradient norm at 1.0, transformers'
  get_cosine_schedule_with_warmup (--warmup, then cosine to 0 over --steps).
SparkMoE runs `sparkmoe train --partitions P`: with one partition, one optimiser step per batch like the single torch
process; with P > 1 and `--averaging gradients`, one step on the mean of the partitions' gradients, which torch does
here as DistributedDataParallel over P ranks would: each partition's loss on its own windows (so each its own
load-balancing loss, which is not additive over batches), their mean backpropagated. (SparkMoE's default parameter
averaging takes a step per partition and averages parameters and moments: another algorithm, not compared here.)

Prints both losses per step, their largest absolute and relative difference, and how far the final LoRA tensors are
apart (‖Δ‖ / ‖·‖ over all B, and over all A). Exits 1 when a loss differs by more than --tolerance (relative).
Needs torch, transformers and safetensors (a venv from the local package index; see docs/benchmarks.md).
"""
import argparse
import json
import math
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
from safetensors.numpy import load_file
from transformers import AutoModelForCausalLM, get_cosine_schedule_with_warmup

from peer import windows_of

M64 = (1 << 64) - 1
GOLDEN_GAMMA = 0x9E3779B97F4A7C15


def mix64(z):
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def mix32(z):
    z = ((z ^ (z >> 33)) * 0x62A9D9ED799705F5) & M64
    return (((z ^ (z >> 28)) * 0xCB24D0A5C88C35B3) & M64) >> 32


class SplittableRandom:
    """java.util.SplittableRandom(seed): nextLong, nextDouble and nextInt(bound) (JDK 17), the same numbers."""

    def __init__(self, seed):
        self.seed = seed & M64

    def _next_seed(self):
        self.seed = (self.seed + GOLDEN_GAMMA) & M64
        return self.seed

    def next_long(self):
        return mix64(self._next_seed())

    def next_int(self, bound):
        r = mix32(self._next_seed())
        m = bound - 1
        if bound & m == 0:
            return r & m
        u = r >> 1
        while True:
            r = u % bound
            if u + m - r < 1 << 31:     # Java's int overflow test: u + m - r must stay below 2^31
                return r
            u = mix32(self._next_seed()) >> 1

    def doubles(self, n):
        """The next n nextDouble() values at once (float64 array), the generator advanced past them."""
        seeds = (np.uint64(self.seed) + np.arange(1, n + 1, dtype=np.uint64) * np.uint64(GOLDEN_GAMMA))
        self.seed = (self.seed + n * GOLDEN_GAMMA) & M64
        z = seeds
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
        return (z >> np.uint64(11)).astype(np.float64) * 2.0 ** -53


def derive(root, name):
    """org.sparkmoe.train.Seeds.derive: FNV-1a 64 of the name's UTF-8 bytes, mixed with the root."""
    h = 0xCBF29CE484222325
    for b in name.encode("utf-8"):
        h = ((h ^ b) * 0x100000001B3) & M64
    return SplittableRandom((root & M64) ^ h).next_long()


def lora_a(experts, rank, fan_in, seed):
    """LoraExperts.init's A, [E, R, in]: (2u − 1) / sqrt(in) in float64, rounded to float32."""
    values = (2.0 * SplittableRandom(seed).doubles(experts * rank * fan_in) - 1.0) * (1.0 / math.sqrt(fan_in))
    return torch.from_numpy(values.astype(np.float32)).view(experts, rank, fan_in)


def sampler_batch(root, partition, windows, step, batch):
    """WindowSampler.batch: the partition's window indices of optimiser step `step`."""
    out, order, order_epoch = [], None, -1
    for j in range(batch):
        position = step * batch + j
        epoch = position // windows
        if epoch != order_epoch:
            random = SplittableRandom(derive(root, f"windows/partition/{partition}/epoch/{epoch}"))
            order = list(range(windows))
            for i in range(windows - 1, 0, -1):
                k = random.next_int(i + 1)
                order[i], order[k] = order[k], order[i]
            order_epoch = epoch
        out.append(order[position % windows])
    return out


def state_prefix(model_type, layer):
    """SparkMoE's trainable-state key of a layer's experts (TrainableKeys): Mixtral's block_sparse_moe, else mlp."""
    return f"model.layers.{layer}." + ("block_sparse_moe" if model_type == "mixtral" else "mlp") + ".experts."


def projection_names(model_type):
    """(gate, up, down) as SparkMoE names them in its state keys."""
    return ("w1", "w3", "w2") if model_type == "mixtral" else ("gate_proj", "up_proj", "down_proj")


class ExpertLora(torch.nn.Module):
    """Per-expert LoRA of gate, up and down on one fused experts module: A [E, R, in], B [E, out, R] each."""

    def __init__(self, experts, rank, alpha, seed, prefix, names):
        super().__init__()
        e, two_i, h = experts.gate_up_proj.shape
        i = two_i // 2
        self.scale = alpha / rank
        self.keys = [prefix + n for n in names]
        shapes = [(h, i), (h, i), (i, h)]          # (in, out) of gate, up, down
        self.a = torch.nn.ParameterList(
            [torch.nn.Parameter(lora_a(e, rank, fan_in, derive(seed, key + ".lora_A")))
             for key, (fan_in, _) in zip(self.keys, shapes)])
        self.b = torch.nn.ParameterList(
            [torch.nn.Parameter(torch.zeros(e, fan_out, rank)) for _, fan_out in shapes])

    def delta(self, p, e, x):
        """scale · B[e] A[e] x for projection p (0 gate, 1 up, 2 down), x [n, in]."""
        return self.scale * ((x @ self.a[p][e].T) @ self.b[p][e].T)


def with_lora(experts, lora):
    """Replaces the experts module's forward by transformers' eager expert loop with the LoRA deltas added."""

    def forward(hidden_states, top_k_index, top_k_weights):
        final = torch.zeros_like(hidden_states)
        with torch.no_grad():
            mask = torch.nn.functional.one_hot(top_k_index, num_classes=experts.num_experts).permute(2, 1, 0)
            hit = torch.greater(mask.sum(dim=(-1, -2)), 0).nonzero()
        for e in hit[:, 0].tolist():
            top_k_pos, token_idx = torch.where(mask[e])
            x = hidden_states[token_idx]
            gate, up = torch.nn.functional.linear(x, experts.gate_up_proj[e]).chunk(2, dim=-1)
            gate = gate + lora.delta(0, e, x)
            up = up + lora.delta(1, e, x)
            h = experts.act_fn(gate) * up
            y = torch.nn.functional.linear(h, experts.down_proj[e]) + lora.delta(2, e, h)
            final.index_add_(0, token_idx, y * top_k_weights[token_idx, top_k_pos, None])
        return final

    experts.forward = forward


def torch_train(args, windows):
    """[loss per step], {state key: final tensor}."""
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32, attn_implementation="eager")
    model.config.output_router_logits = True
    model.requires_grad_(False)
    model_type = model.config.model_type
    loras = []
    for layer, block in enumerate(model.model.layers):
        experts = getattr(block.mlp, "experts", None)
        if experts is None:
            continue
        lora = ExpertLora(experts, args.rank, args.alpha, args.seed, state_prefix(model_type, layer),
                          projection_names(model_type))
        with_lora(experts, lora)
        loras.append(lora)
    trainable = [p for lora in loras for p in list(lora.a) + list(lora.b)]
    optimiser = torch.optim.AdamW(trainable, lr=args.lr, weight_decay=0.0)
    schedule = get_cosine_schedule_with_warmup(optimiser, args.warmup, args.steps)
    model.train()
    losses = []
    shards = [windows[p::args.partitions] for p in range(args.partitions)]
    for step in range(args.steps):
        loss = 0
        for p, shard in enumerate(shards):
            ids = shard[sampler_batch(args.seed, p, shard.shape[0], step, args.batch_windows)]
            loss = loss + model(input_ids=ids, labels=ids).loss / args.partitions
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimiser.step()
        schedule.step()
        optimiser.zero_grad(set_to_none=True)
        losses.append(loss.item())
        print(f"torch step {step + 1}: loss {losses[-1]:.6f}", flush=True)
    final = {}
    for lora in loras:
        for p, key in enumerate(lora.keys):
            final[key + ".lora_A"] = lora.a[p].detach().numpy()
            final[key + ".lora_B"] = lora.b[p].detach().numpy()
    return losses, final


def sparkmoe_train(args, out):
    """[loss per step]; the run's final LoRA in out/adapter (PEFT, per expert)."""
    command = [args.sparkmoe, "train", "--model", args.model, "--data", args.data, "--split", args.split,
               "--window", str(args.window), "--batch-windows", str(args.batch_windows), "--steps", str(args.steps),
               "--partitions", str(args.partitions), "--averaging", "gradients", "--averaging-frequency", "1",
               "--lr", str(args.lr), "--warmup", str(args.warmup),
               "--rank", str(args.rank), "--alpha", str(args.alpha), "--seed", str(args.seed),
               "--checkpoint-every", str(args.steps + 1), "--master", f"local[{args.threads}]", "--out", out]
    run = subprocess.run(command, capture_output=True, text=True)
    if run.returncode != 0:
        sys.exit(f"loss_curve: sparkmoe train failed (exit {run.returncode}):\n{run.stderr[-3000:]}")
    with open(os.path.join(out, "train-log.jsonl")) as f:
        return [json.loads(line)["loss"] for line in f if line.strip()]


def sparkmoe_lora(out, model_type, final):
    """The adapter's per-expert tensors stacked by state key, for the keys torch trained."""
    tensors = load_file(os.path.join(out, "adapter", "adapter_model.safetensors"))
    stacked = {}
    for key, ours in final.items():
        prefix, kind = key.rsplit(".", 1)                     # model.layers.L.<moe>.experts.<proj>, lora_A|lora_B
        moe, proj = prefix.rsplit(".experts.", 1)
        stacked[key] = np.stack([tensors[f"base_model.model.{moe}.experts.{e}.{proj}.{kind}.weight"]
                                 for e in range(ours.shape[0])])
    return stacked


def relative(a, b):
    """‖a − b‖ / ‖b‖ over every tensor of the two dicts together."""
    diff = sum(float(np.sum((a[k].astype(np.float64) - b[k]) ** 2)) for k in b)
    norm = sum(float(np.sum(b[k].astype(np.float64) ** 2)) for k in b)
    return math.sqrt(diff / norm)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True, help="text file to train on")
    p.add_argument("--split", default="valid")
    p.add_argument("--window", type=int, default=256)
    p.add_argument("--batch-windows", type=int, default=8, help="windows per step and partition")
    p.add_argument("--partitions", type=int, default=1)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--alpha", type=float, default=32)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--warmup", type=int, default=0)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--threads", type=int, default=2, help="torch threads; SparkMoE's local[N]")
    p.add_argument("--tolerance", type=float, default=1e-4, help="largest relative loss difference accepted")
    p.add_argument("--sparkmoe", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bin",
                                                         "sparkmoe"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    windows = windows_of(args.model, args.data, args.split, args.window)
    losses, final = torch_train(args, windows)
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "train")
        ours = sparkmoe_train(args, out)
        with open(os.path.join(args.model, "config.json")) as f:
            model_type = json.load(f)["model_type"]
        stacked = sparkmoe_lora(out, model_type, final)
    print("step  torch+transformers  sparkmoe  relative difference")
    worst = 0.0
    for step, (a, b) in enumerate(zip(losses, ours), 1):
        rel = abs(a - b) / abs(a)
        worst = max(worst, rel)
        print(f"{step:4d}  {a:.6f}  {b:.6f}  {rel:.2e}")
    kinds = {kind: {k: v for k, v in final.items() if k.endswith(kind)} for kind in ("lora_A", "lora_B")}
    print(f"largest relative loss difference {worst:.2e} (tolerance {args.tolerance:g}); final LoRA "
          f"‖Δ‖/‖·‖: A {relative(stacked, kinds['lora_A']):.2e}, B {relative(stacked, kinds['lora_B']):.2e}")
    if len(ours) != len(losses) or worst > args.tolerance:
        sys.exit(1)


if __name__ == "__main__":
    main()
