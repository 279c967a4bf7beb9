#!/usr/bin/env python3
"""Golden tensors for Qwen3MoeParityTest and OlmoeParityTest, made by transformers itself.

Builds a tiny random qwen3_moe and a tiny olmoe with transformers (float32, eager attention), saves them with
save_pretrained, and writes their outputs on 3 × 16 random tokens plus the test-split perplexity of the
bundled sysadmin.txt, tokenized by the bundled tokenizer.json:

    python3 -m venv /tmp/venv15
    /tmp/venv15/bin/pip install torch 'transformers==5.17.*' safetensors numpy
    /tmp/venv15/bin/python make_qwen3_olmoe_reference.py      # from anywhere inside the repository

Writes, next to this script: qwen3-moe-tiny/ and olmoe-tiny/ (config.json, model.safetensors, tokenizer.json)
and qwen3-moe-tiny-reference.safetensors, olmoe-tiny-reference.safetensors holding
  input_ids           I64 [3, 16]
  logits              F32 [3, 16, V]
  hidden_states.N     F32 [3, 16, D]   N = 0..L (embeddings, after layers 0..L-2, the final-normed output)
  router_logits.N     F32 [48, E]      the raw gate logits of the MoE layers only, in layer order
  ppl.tokens          I64 [1]          scored tokens of sysadmin.txt's test split in windows of 64
  ppl.nll_sum         F64 [1]          their summed negative log-likelihood (natural log)
  fused.gate_up_proj  F32 [E, 2I, D]   layer 0's experts as transformers holds them in memory (and as
  fused.down_proj     F32 [E, D, I]    transformers-5-style checkpoints store them), from model.state_dict()

The weights are redrawn after construction (transformers initialises with std 0.02, which makes every layer
nearly the identity and every router nearly uniform): matrices ~ N(0, 0.2²), norm weights ~ 1 + N(0, 0.1²),
biases ~ N(0, 0.1²), from one seeded torch generator per model.

What each fixture exercises:
  qwen3_moe: head_dim 12 ≠ hidden/heads = 8; per-head q/k RMSNorm; attention_bias true (q/k/v/o biases, which
             released Qwen3-MoE checkpoints do not use); layer 1 dense (mlp_only_layers, intermediate_size 48) and
             experts of moe_intermediate_size 16; norm_topk_prob true; tied embeddings.
  olmoe:     q/k RMSNorm over the whole projections (k over KVH·hd = 16 with 2 KV heads); clip_qkv 1.5, which
             clamps a part of q, k and v; norm_topk_prob false; experts of intermediate_size 16.
"""
import os
import shutil

import numpy as np
import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer
from transformers import OlmoeConfig, OlmoeForCausalLM, Qwen3MoeConfig, Qwen3MoeForCausalLM

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "../../../../.."))
TOKENIZER = os.path.join(ROOT, "examples/models/mixtral-tiny/tokenizer.json")
CORPUS = os.path.join(ROOT, "examples/corpus/sysadmin.txt")
WINDOW = 64
BATCH, SEQ = 3, 16


def qwen3_moe():
    return Qwen3MoeForCausalLM(Qwen3MoeConfig(
        vocab_size=1024, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
        head_dim=12, intermediate_size=48, moe_intermediate_size=16, num_experts=6, num_experts_per_tok=2,
        norm_topk_prob=True, decoder_sparse_step=1, mlp_only_layers=[1], attention_bias=True,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}, rms_norm_eps=1e-6,
        max_position_embeddings=128, tie_word_embeddings=True, use_sliding_window=False, bos_token_id=0,
        eos_token_id=0, pad_token_id=None, attn_implementation="eager", dtype=torch.float32))


def olmoe():
    return OlmoeForCausalLM(OlmoeConfig(
        vocab_size=1024, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=16, num_experts=6, num_experts_per_tok=2, norm_topk_prob=False, clip_qkv=1.5,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, rms_norm_eps=1e-5,
        max_position_embeddings=128, tie_word_embeddings=False, bos_token_id=0, eos_token_id=0,
        pad_token_id=None, attn_implementation="eager", dtype=torch.float32))


def redraw(model, seed):
    """Every parameter redrawn from one generator, in named_parameters order (tied weights once)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or name.endswith("layernorm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.2 * torch.randn(p.shape, generator=g))


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


@torch.no_grad()
def make(name, model, seed):
    torch.manual_seed(seed)
    redraw(model, seed)
    model.eval()
    folder = os.path.join(HERE, name)
    shutil.rmtree(folder, ignore_errors=True)
    model.save_pretrained(folder)
    shutil.copy(TOKENIZER, os.path.join(folder, "tokenizer.json"))
    gen = os.path.join(folder, "generation_config.json")
    if os.path.exists(gen):
        os.remove(gen)

    input_ids = torch.randint(0, model.config.vocab_size, (BATCH, SEQ), generator=torch.Generator().manual_seed(seed))
    out = model(input_ids=input_ids, output_hidden_states=True, output_router_logits=True)
    golden = {"input_ids": input_ids, "logits": out.logits.float().contiguous()}
    golden.update({f"hidden_states.{i}": h.contiguous() for i, h in enumerate(out.hidden_states)})
    golden.update({f"router_logits.{i}": r.contiguous() for i, r in enumerate(out.router_logits)})
    state = model.state_dict()
    golden["fused.gate_up_proj"] = state["model.layers.0.mlp.experts.gate_up_proj"].contiguous()
    golden["fused.down_proj"] = state["model.layers.0.mlp.experts.down_proj"].contiguous()
    tokens, nll = perplexity_sums(model)
    golden["ppl.tokens"] = torch.tensor([tokens], dtype=torch.int64)
    golden["ppl.nll_sum"] = torch.tensor([nll], dtype=torch.float64)
    save_file(golden, os.path.join(HERE, name + "-reference.safetensors"))
    print(f"{name}: {len(out.router_logits)} MoE layers, {len(out.hidden_states)} hidden states, "
          f"test perplexity {np.exp(nll / tokens):.6f} over {tokens} tokens")


if __name__ == "__main__":
    make("qwen3-moe-tiny", qwen3_moe(), 20260301)
    make("olmoe-tiny", olmoe(), 20260302)
