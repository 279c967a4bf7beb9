#!/usr/bin/env python3
"""Golden tensors for Glm4MoeParityTest, made by transformers itself.

Builds a tiny random glm4_moe with transformers (float32, eager attention), saves it with save_pretrained, and
writes its outputs on 3 × 16 random tokens plus the test-split perplexity of the bundled sysadmin.txt, tokenized by
the bundled tokenizer.json:

    /tmp/venv15/bin/python make_glm4_moe_reference.py      # transformers 5.17, torch, safetensors, numpy

Writes, next to this script: glm4-moe-tiny/ (config.json, model.safetensors, tokenizer.json) and
glm4-moe-tiny-reference.safetensors holding
  input_ids           I64 [3, 16]
  logits              F32 [3, 16, V]
  hidden_states.N     F32 [3, 16, D]   N = 0..L (embeddings, after layers 0..L-2, the final-normed output)
  router_logits.N     F32 [48, E]      the raw gate logits x·Wᵀ of the MoE layers, in layer order: transformers
                                       5.17 returns none for glm4_moe, so a forward hook on each mlp.gate
                                       (Glm4MoeTopkRouter returns router_logits, topk_weights, topk_indices) takes them
  router_experts.N    I64 [48, K]      the chosen experts of each token (ascending), from the same hook
  router_weights.N    F32 [48, K]      their routing weights, in the order of router_experts.N
  ppl.tokens          I64 [1]          scored tokens of sysadmin.txt's test split in windows of 64
  ppl.nll_sum         F64 [1]          their summed negative log-likelihood (natural log)

The weights are redrawn after construction (transformers initialises with std 0.02, which makes every layer
nearly the identity and every router nearly uniform): matrices ~ N(0, 0.2²), norm weights ~ 1 + N(0, 0.1²),
biases ~ N(0, 0.1²), each router's e_score_correction_bias (a buffer, not a parameter) ~ N(0, 0.15²), from one
seeded torch generator.

What the fixture exercises: head_dim 16 with partial_rotary_factor 0.5 (RoPE on the leading 8 entries of each
head, rotate_half); per-head q/k RMSNorm (use_qk_norm); q/k/v biases (attention_bias) and no o_proj bias; GQA
4/2; layer 0 dense (first_k_dense_replace 1, intermediate_size 48) and layers 1-2 MoE with 8 routed experts of
moe_intermediate_size 16 plus 1 ungated shared expert; sigmoid scores; groups n_group 2 / topk_group 1 ranked by
their top-2 corrected scores; top-2; norm_topk_prob; routed_scaling_factor 2.5. The script asserts that the
correction bias and the group limit each change some selections (and prints how many).
"""
import os
import shutil

import numpy as np
import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer
from transformers import Glm4MoeConfig, Glm4MoeForCausalLM

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "../../../../.."))
TOKENIZER = os.path.join(ROOT, "examples/models/mixtral-tiny/tokenizer.json")
CORPUS = os.path.join(ROOT, "examples/corpus/sysadmin.txt")
WINDOW = 64
BATCH, SEQ = 3, 16
NAME = "glm4-moe-tiny"
SEED = 20260416


def glm4_moe():
    return Glm4MoeForCausalLM(Glm4MoeConfig(
        vocab_size=1024, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
        head_dim=16, intermediate_size=48, moe_intermediate_size=16, n_routed_experts=8, n_shared_experts=1,
        num_experts_per_tok=2, n_group=2, topk_group=1, norm_topk_prob=True, routed_scaling_factor=2.5,
        first_k_dense_replace=1, attention_bias=True, use_qk_norm=True,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5},
        rms_norm_eps=1e-5, max_position_embeddings=128, tie_word_embeddings=False, bos_token_id=0,
        eos_token_id=0, pad_token_id=None, attn_implementation="eager", dtype=torch.float32))


def redraw(model, seed):
    """Every parameter redrawn from one generator, in named_parameters order, then the correction biases."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or name.endswith("layernorm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
        for name, b in model.named_buffers():
            if name.endswith("e_score_correction_bias"):
                b.copy_(0.15 * torch.randn(b.shape, generator=g))


def test_split(text):
    """docs/data.md: the last 5% of the code points, from floor(0.95·n)."""
    return text[len(text) * 95 // 100:]


@torch.no_grad()
def perplexity_sums(model):
    tok = Tokenizer.from_file(TOKENIZER)
    tok.no_truncation()
    with open(CORPUS, encoding="utf-8") as f:
        ids = tok.encode(test_split(f.read()), add_special_tokens=False).ids
    n = len(ids) // WINDOW
    windows = torch.tensor(ids[:n * WINDOW], dtype=torch.long).reshape(n, WINDOW)
    nll = 0.0
    for start in range(0, n, 16):
        w = windows[start:start + 16]
        logp = torch.log_softmax(model(input_ids=w).logits.double(), dim=-1)       # [b, W, V]
        nll += float(-logp[:, :-1].gather(-1, w[:, 1:, None]).sum())
    return n * (WINDOW - 1), nll


def choose(gate, logits, bias, groups):
    """The gate's selection from raw logits [T, E] with the given bias and group limit (sets per token)."""
    scores = logits.sigmoid() + bias
    e = scores.shape[-1]
    if groups:
        g = scores.view(-1, gate.num_group, e // gate.num_group).topk(2, dim=-1)[0].sum(-1)
        keep = torch.zeros_like(g).scatter_(1, torch.topk(g, gate.topk_group, dim=-1)[1], 1)
        mask = keep.unsqueeze(-1).expand(-1, gate.num_group, e // gate.num_group).reshape(-1, e)
        scores = scores.masked_fill(~mask.bool(), float("-inf"))
    return [set(r) for r in torch.topk(scores, gate.top_k, dim=-1)[1].tolist()]


@torch.no_grad()
def make():
    model = glm4_moe()
    torch.manual_seed(SEED)
    redraw(model, SEED)
    model.eval()
    folder = os.path.join(HERE, NAME)
    shutil.rmtree(folder, ignore_errors=True)
    model.save_pretrained(folder)
    shutil.copy(TOKENIZER, os.path.join(folder, "tokenizer.json"))
    gen = os.path.join(folder, "generation_config.json")
    if os.path.exists(gen):
        os.remove(gen)

    gates = [layer.mlp.gate for layer in model.model.layers if hasattr(layer.mlp, "gate")]
    captured = []
    hooks = [g.register_forward_hook(lambda m, i, o: captured.append((m, o))) for g in gates]
    input_ids = torch.randint(0, model.config.vocab_size, (BATCH, SEQ), generator=torch.Generator().manual_seed(SEED))
    out = model(input_ids=input_ids, output_hidden_states=True)
    for h in hooks:
        h.remove()
    golden = {"input_ids": input_ids, "logits": out.logits.float().contiguous()}
    golden.update({f"hidden_states.{i}": h.contiguous() for i, h in enumerate(out.hidden_states)})
    changed_by_bias = changed_by_groups = 0
    for n, (gate, (logits, weights, experts)) in enumerate(captured):
        order = experts.argsort(dim=-1)
        golden[f"router_logits.{n}"] = logits.contiguous()
        golden[f"router_experts.{n}"] = experts.gather(1, order).contiguous()
        golden[f"router_weights.{n}"] = weights.gather(1, order).contiguous()
        chosen = [set(r) for r in experts.tolist()]
        assert chosen == choose(gate, logits, gate.e_score_correction_bias, True), "selection recomputed"
        zero = torch.zeros_like(gate.e_score_correction_bias)
        changed_by_bias += sum(a != b for a, b in zip(chosen, choose(gate, logits, zero, True)))
        changed_by_groups += sum(a != b for a, b in zip(chosen, choose(gate, logits, gate.e_score_correction_bias,
                                                                         False)))
    tokens_routed = len(captured) * BATCH * SEQ
    assert changed_by_bias > 0, "the correction bias must change some selections"
    assert changed_by_groups > 0, "the group limit must change some selections"
    tokens, nll = perplexity_sums(model)
    golden["ppl.tokens"] = torch.tensor([tokens], dtype=torch.int64)
    golden["ppl.nll_sum"] = torch.tensor([nll], dtype=torch.float64)
    save_file(golden, os.path.join(HERE, NAME + "-reference.safetensors"))
    print(f"{NAME}: {len(captured)} MoE layers, {len(out.hidden_states)} hidden states, "
          f"test perplexity {np.exp(nll / tokens):.6f} over {tokens} tokens; of {tokens_routed} token routings "
          f"the correction bias changes {changed_by_bias}, the group limit {changed_by_groups}")


if __name__ == "__main__":
    make()
