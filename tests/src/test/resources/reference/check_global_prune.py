#!/usr/bin/env python3
"""Checks a `sparkmoe surgery prune --global` checkpoint with transformers itself.

    /tmp/venv15/bin/python check_global_prune.py ORIGINAL PRUNED     # transformers 5.17, torch, safetensors

ORIGINAL is the model folder the prune read, PRUNED the folder it wrote (its surgery.json lists, per MoE layer, the
original indices of the experts its router can choose, "kept", and of those it holds masked, "masked"). Both are
loaded by transformers (float32, eager attention) and run on 4 × 64 seeded random tokens. It asserts:

1. PRUNED never selects a masked expert: a forward hook on every MoE layer's router (gpt-oss `mlp.router`, GLM-4.5 /
   DeepSeek-V3 `mlp.gate`; each returns router_logits, weights, indices) counts the chosen indices that are masked.
2. PRUNED computes what ORIGINAL computes when each MoE layer's router may choose only its kept experts: the routers
   of ORIGINAL are replaced by the same routing restricted to the kept experts, written here without any bias trick:
   - gpt_oss: top-K of the logits x·Wᵀ + b over the kept experts, softmax over those K;
   - glm4_moe / deepseek_v3: sigmoid scores s, choice c = s + e_score_correction_bias; with group-limited selection
     a group is ranked first by how many kept experts it has, up to 2, then by the sum of its (up to) 2 best kept
     choices (transformers ranks a group by its two best choices; with a masked expert among them, that group falls
     below every group with two kept ones, and a group with none below every group with one); top-K of the kept
     experts of the chosen groups; weights the uncorrected s of those, renormalised when norm_topk_prob, times
     routed_scaling_factor.
   The logits must agree within 1e-5 (the experts' outputs are summed in another order under their new indices).
   Tokens where two groups with one kept expert each have kept choices within 2⁻⁹ of each other are counted and
   reported: PRUNED compares such groups by s + (0.5 − 2¹⁴) in float32, whose spacing there is 2⁻¹⁰.
Prints the selections of masked experts, the largest |Δ logit| and the near-tie count; exits non-zero on failure.

With a third argument it also writes the golden file GlobalPruneCommandTest compares our loader with:

    /tmp/venv15/bin/python check_global_prune.py scores gpt-oss-tiny out/gpt-oss-scores.json
    deploy/bin/sparkmoe surgery prune --global --experts 5 --model tests/src/test/resources/reference/gpt-oss-tiny \
        --stats out/gpt-oss-scores.json --out out/gpt-oss-global
    /tmp/venv15/bin/python check_global_prune.py tests/src/test/resources/reference/gpt-oss-tiny out/gpt-oss-global \
        tests/src/test/resources/reference/global-prune-gpt-oss-tiny-reference.safetensors

(deepseek-v3-tiny likewise with --experts 4). `scores FIXTURE FILE` writes the synthetic expert-scores.json that
GlobalPruneCommandTest writes: in the first MoE layer the K first experts score 100, 90, 80, … and the others 1, in
every later layer expert e scores e + 1, by every method. The golden file holds
  input_ids   I64 [3, 16]      seeded random tokens
  logits      F32 [3, 16, V]   transformers' logits of PRUNED on them
"""
import json
import os
import sys

import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM

SEED = 20261206
BATCH, SEQ = 4, 64
MASKED = -16384.0


def load(folder):
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager")
    return model.eval()


def router_of(layer):
    mlp = layer.mlp
    return mlp.router if hasattr(mlp, "router") else getattr(mlp, "gate", None)


def restricted_gpt_oss(router, kept):
    allowed = torch.zeros(router.weight.shape[0], dtype=torch.bool)
    allowed[kept] = True

    def forward(hidden_states):
        logits = F.linear(hidden_states, router.weight, router.bias)
        choice = logits.masked_fill(~allowed, float("-inf"))
        top, idx = torch.topk(choice, router.top_k, dim=-1)
        return logits, torch.softmax(top, dim=1, dtype=top.dtype), idx
    return forward


def restricted_sigmoid(router, kept, near_ties):
    experts = router.weight.shape[0]
    allowed = torch.zeros(experts, dtype=torch.bool)
    allowed[kept] = True
    groups = router.num_group
    size = experts // groups

    def forward(hidden_states):
        hidden_states = hidden_states.view(-1, router.hidden_dim)
        logits = F.linear(hidden_states.type(torch.float32), router.weight.type(torch.float32))
        scores = logits.sigmoid()
        choice = (scores + router.e_score_correction_bias).masked_fill(~allowed, float("-inf"))
        if router.topk_group < groups:
            per = choice.view(-1, groups, size).double()
            count = allowed.view(groups, size).sum(-1).clamp(max=2).double()           # [G] kept, up to 2
            best = per.topk(2, dim=-1)[0]                                              # [T, G, 2]
            partial = torch.where(torch.isinf(best), torch.zeros_like(best), best).sum(-1)
            key = count * 1e6 + partial                                                # tier first, then the sum
            ones = (count == 1).nonzero().flatten()
            if len(ones) > 1:
                v = partial[:, ones].sort(dim=-1)[0]
                near_ties[0] += int(((v[:, 1:] - v[:, :-1]) < 2 ** -9).any(dim=-1).sum())
            group_idx = torch.topk(key, k=router.topk_group, dim=-1)[1]
            mask = torch.zeros_like(key).scatter_(1, group_idx, 1).bool()
            mask = mask.unsqueeze(-1).expand(-1, groups, size).reshape(-1, experts)
            choice = choice.masked_fill(~mask, float("-inf"))
        idx = torch.topk(choice, k=router.top_k, dim=-1)[1]
        weights = scores.gather(1, idx)
        if router.norm_topk_prob:
            weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)
        return logits, weights * router.routed_scaling_factor, idx
    return forward


def main(original_dir, pruned_dir):
    with open(os.path.join(pruned_dir, "surgery.json")) as f:
        report = json.load(f)
    if not report["settings"].get("global"):
        sys.exit(pruned_dir + ": not the output of surgery prune --global")
    original, pruned = load(original_dir), load(pruned_dir)
    gen = torch.Generator().manual_seed(SEED)
    ids = torch.randint(0, original.config.vocab_size, (BATCH, SEQ), generator=gen)

    masked_selections = [0]
    near_ties = [0]
    for entry in report["layers"]:
        l = entry["layer"]
        held = sorted(entry["kept"] + entry["masked"])                  # new expert g is held[g]
        masked_new = torch.tensor([held.index(e) for e in entry["masked"]], dtype=torch.long)
        r = router_of(pruned.model.layers[l])
        stored = (r.bias if hasattr(r, "bias") and r.bias is not None else r.e_score_correction_bias).detach()
        assert all(float(stored[g]) == MASKED for g in masked_new), f"layer {l}: masked bias is not {MASKED}"

        def hook(module, args, out, masked_new=masked_new):
            masked_selections[0] += int(torch.isin(out[2], masked_new).sum())
        r.register_forward_hook(hook)

        o = router_of(original.model.layers[l])
        o.forward = (restricted_gpt_oss(o, entry["kept"]) if original.config.model_type == "gpt_oss"
                     else restricted_sigmoid(o, entry["kept"], near_ties))

    with torch.no_grad():
        a = pruned(input_ids=ids).logits
        b = original(input_ids=ids).logits
    delta = (a - b).abs().max().item()
    print(f"{pruned_dir}: {BATCH * SEQ} tokens, masked selections {masked_selections[0]}, "
          f"max |Δ logit| vs the kept-only routing {delta:.3g} (logits up to {b.abs().max().item():.3g}), "
          f"near ties among one-expert groups {near_ties[0]}")
    if masked_selections[0] != 0 or not delta <= 1e-5:
        sys.exit(1)


def write_scores(fixture, out):
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, fixture, "config.json")) as f:
        config = json.load(f)
    model_type = config["model_type"]
    experts = config.get("num_local_experts") or config.get("n_routed_experts") or config["num_experts"]
    k = config["num_experts_per_tok"]
    first = config.get("first_k_dense_replace", 0)
    layers = []
    for i, layer in enumerate(range(first, config["num_hidden_layers"])):
        s = [float(e + 1) if i > 0 else (100.0 - 10 * e if e < k else 1.0) for e in range(experts)]
        layers.append({"layer": layer, "experts": experts, "top_k": k, "routed_tokens": [0] * experts,
                       "frequency": s, "reap": s, "ean": s})
    with open(out, "w") as f:
        json.dump({"model_type": model_type, "tokens": 100, "min_expert_tokens": 0, "rare_experts": [],
                   "layers": layers}, f)


def write_golden(pruned_dir, out):
    from safetensors.torch import save_file
    pruned = load(pruned_dir)
    gen = torch.Generator().manual_seed(SEED + 1)
    ids = torch.randint(0, pruned.config.vocab_size, (3, 16), generator=gen)
    with torch.no_grad():
        logits = pruned(input_ids=ids).logits
    save_file({"input_ids": ids.contiguous(), "logits": logits.float().contiguous()}, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "scores":
        write_scores(sys.argv[2], sys.argv[3])
    elif len(sys.argv) in (3, 4):
        main(sys.argv[1], sys.argv[2])
        if len(sys.argv) == 4:
            write_golden(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
