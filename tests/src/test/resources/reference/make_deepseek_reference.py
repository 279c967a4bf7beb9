#!/usr/bin/env python3
"""Golden tensors for DeepseekParityTest, made by transformers itself.

Builds a tiny random deepseek_v2 and a tiny deepseek_v3 with transformers (float32, eager attention), saves
them with save_pretrained, and writes their outputs on 3 × 16 random tokens plus the test-split perplexity of
the bundled sysadmin.txt, tokenized by the bundled tokenizer.json (as make_qwen3_olmoe_reference.py):

    /tmp/venv15/bin/python make_deepseek_reference.py      # torch, transformers 5.17, safetensors, numpy

Writes, next to this script: deepseek-v2-tiny/ and deepseek-v3-tiny/ (config.json, model.safetensors,
tokenizer.json) and deepseek-v2-tiny-reference.safetensors, deepseek-v3-tiny-reference.safetensors holding
  input_ids           I64 [3, 16]
  logits              F32 [3, 16, V]
  hidden_states.N     F32 [3, 16, D]   N = 0..L (embeddings, after layers 0..L-2, the final-normed output)
  router_logits.N     F32 [48, E]      the raw gate logits (x·Wgᵀ) of the MoE layers, in layer order, taken by a
                                       forward hook on each mlp.gate (transformers 5.17 returns none for these types)
  ppl.tokens          I64 [1]          scored tokens of sysadmin.txt's test split in windows of 64
  ppl.nll_sum         F64 [1]          their summed negative log-likelihood (natural log)

Weights are redrawn after construction as in make_qwen3_olmoe_reference.py: matrices ~ N(0, 0.2²), norm weights
~ 1 + N(0, 0.1²), biases ~ N(0, 0.1²); deepseek-v3's e_score_correction_bias ~ N(0, 0.1²), large enough that it
changes a part of the selections (the script prints how many of the T·K choices differ without it).

What each fixture exercises:
  deepseek_v2 (V2-Lite-like): no q_lora (plain q_proj); softmax routing with group_limited_greedy (4 groups of 2,
             the best 2 kept by their max score), routed_scaling_factor 1.5, norm_topk_prob false; 2 shared experts
             (ungated, 2·16 wide); first_k_dense_replace 1 (layer 0 a dense MLP of 48); YaRN as V2-Lite's
             (mscale = mscale_all_dim = 0.707: cos/sin unscaled, the softmax scale × mscale²) with factor 4 over
             64 original positions, so the 8 rotary dims are extrapolated, blended and interpolated; RoPE on
             interleaved pairs (V2's complex product).
  deepseek_v3: q_lora_rank 12 (q_a_proj, q_a_layernorm, q_b_proj); v_head_dim 12 ≠ qk_head_dim 16; sigmoid
             routing with noaux_tc (4 groups of 2 ranked by the sum of their top-2 corrected scores, 2 kept),
             a nonzero e_score_correction_bias, norm_topk_prob true, routed_scaling_factor 2.5; 1 shared expert;
             first_k_dense_replace 1; rope_interleave true; YaRN with mscale 1.0 ≠ mscale_all_dim 0.8 (both the
             cos/sin factor and the softmax factor differ from 1).
"""
import json
import os
import shutil

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer
from transformers import DeepseekV2Config, DeepseekV2ForCausalLM, DeepseekV3Config, DeepseekV3ForCausalLM

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "../../../../.."))
TOKENIZER = os.path.join(ROOT, "examples/models/mixtral-tiny/tokenizer.json")
CORPUS = os.path.join(ROOT, "examples/corpus/sysadmin.txt")
WINDOW = 64
BATCH, SEQ = 3, 16
COMMON = dict(vocab_size=1024, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=4,
              intermediate_size=48, moe_intermediate_size=16, n_routed_experts=8, num_experts_per_tok=2,
              first_k_dense_replace=1, kv_lora_rank=16, max_position_embeddings=256, rms_norm_eps=1e-6,
              tie_word_embeddings=False, bos_token_id=0, eos_token_id=0, pad_token_id=None,
              attn_implementation="eager", dtype=torch.float32)


def deepseek_v2():
    return DeepseekV2ForCausalLM(DeepseekV2Config(
        q_lora_rank=None, qk_nope_head_dim=8, qk_rope_head_dim=8, v_head_dim=8, n_shared_experts=2,
        topk_method="group_limited_greedy", n_group=4, topk_group=2, routed_scaling_factor=1.5, norm_topk_prob=False,
        rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0,
                         "original_max_position_embeddings": 64, "beta_fast": 32, "beta_slow": 1,
                         "mscale": 0.707, "mscale_all_dim": 0.707},
        **COMMON))


def deepseek_v3(**overrides):
    common = dict(COMMON, **overrides)
    return DeepseekV3ForCausalLM(DeepseekV3Config(
        q_lora_rank=12, qk_nope_head_dim=8, qk_rope_head_dim=8, v_head_dim=12, n_shared_experts=1,
        n_group=4, topk_group=2, routed_scaling_factor=2.5, norm_topk_prob=True, rope_interleave=True,
        rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0,
                         "original_max_position_embeddings": 64, "beta_fast": 32, "beta_slow": 1,
                         "mscale": 1.0, "mscale_all_dim": 0.8},
        **common))


def redraw(model, seed):
    """Every parameter (and the correction-bias buffers) redrawn from one generator, in named order."""
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
                b.copy_(0.1 * torch.randn(b.shape, generator=g))


def quantize_fp8(w, block):
    """The block recipe: per bo×bi block (ceil grid, last blocks partial) s = amax/448, codes = e4m3(w/s); returns
    the codes, s as weight_scale_inv [⌈out/bo⌉, ⌈in/bi⌉] and the dequantized weight codes·s (DeepSeek's
    weight_dequant), all computed in float32."""
    bo, bi = block
    out, inp = w.shape
    rows, cols = -(-out // bo), -(-inp // bi)
    scale = torch.empty(rows, cols, dtype=torch.float32)
    codes = torch.empty(out, inp, dtype=torch.float8_e4m3fn)
    deq = torch.empty(out, inp, dtype=torch.float32)
    for r in range(rows):
        for c in range(cols):
            tile = w[r * bo:(r + 1) * bo, c * bi:(c + 1) * bi].float()
            s = tile.abs().max().clamp(min=1e-12) / 448.0
            q = (tile / s).to(torch.float8_e4m3fn)
            scale[r, c] = s
            codes[r * bo:(r + 1) * bo, c * bi:(c + 1) * bi] = q
            deq[r * bo:(r + 1) * bo, c * bi:(c + 1) * bi] = q.float() * s
    return codes, scale, deq


def quantized(name):
    """DeepSeek-V3's FP8 weights: every linear weight of a decoder layer except the router gate."""
    return name.startswith("model.layers.") and name.endswith("proj.weight")


def test_split(text):
    """docs/data.md: the last 5% of the code points, from floor(0.95·n)."""
    return text[len(text) * 95 // 100:]


def margin_hook(margins):
    """A forward hook on a V3 gate recording the smallest margin of its choices: between the last kept and the first
    dropped group score, and between the K-th and (K+1)-th corrected expert score inside the kept groups. A margin
    near float32 rounding would let a last-bit difference flip a choice; the fixtures' seeds keep it clear."""
    def hook(gate, inputs, output):
        x = inputs[0].view(-1, gate.hidden_dim)
        s = torch.nn.functional.linear(x.float(), gate.weight.float()).sigmoid() + gate.e_score_correction_bias
        groups = s.view(-1, gate.num_group, gate.num_experts // gate.num_group).topk(2, dim=-1)[0].sum(dim=-1)
        ranked = groups.sort(dim=-1, descending=True)[0]
        kept = torch.zeros_like(groups).scatter_(1, torch.topk(groups, gate.topk_group, dim=-1)[1], 1)
        mask = kept.unsqueeze(-1).expand(-1, gate.num_group, gate.num_experts // gate.num_group).reshape(s.shape)
        chosen = s.masked_fill(~mask.bool(), float("-inf")).sort(dim=-1, descending=True)[0]
        margins.append(min(float((ranked[:, gate.topk_group - 1] - ranked[:, gate.topk_group]).min()),
                           float((chosen[:, gate.top_k - 1] - chosen[:, gate.top_k]).min())))
    return hook


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
def make(name, model, seed, fp8_block=None):
    torch.manual_seed(seed)
    redraw(model, seed)
    model.eval()
    folder = os.path.join(HERE, name)
    shutil.rmtree(folder, ignore_errors=True)
    model.save_pretrained(folder)
    if fp8_block is not None:
        fp8_checkpoint(model, folder, fp8_block)
    shutil.copy(TOKENIZER, os.path.join(folder, "tokenizer.json"))
    gen = os.path.join(folder, "generation_config.json")
    if os.path.exists(gen):
        os.remove(gen)

    gates = [layer.mlp.gate for layer in model.model.layers if hasattr(layer.mlp, "gate")]
    captured = {}
    hooks = [g.register_forward_hook(lambda m, i, o, k=k: captured.__setitem__(k, (i[0], o)))
             for k, g in enumerate(gates)]
    input_ids = torch.randint(0, model.config.vocab_size, (BATCH, SEQ), generator=torch.Generator().manual_seed(seed))
    out = model(input_ids=input_ids, output_hidden_states=True)
    for h in hooks:
        h.remove()
    golden = {"input_ids": input_ids, "logits": out.logits.float().contiguous()}
    golden.update({f"hidden_states.{i}": h.contiguous() for i, h in enumerate(out.hidden_states)})
    golden.update({f"router_logits.{k}": captured[k][1][0].contiguous() for k in range(len(gates))})
    for k, g in enumerate(gates):
        if hasattr(g, "e_score_correction_bias"):
            x, (_, _, chosen) = captured[k]
            saved = g.e_score_correction_bias.clone()
            g.e_score_correction_bias.zero_()
            _, _, unbiased = g(x)
            g.e_score_correction_bias.copy_(saved)
            changed = sum(len(set(a.tolist()) ^ set(b.tolist())) // 2 for a, b in zip(chosen, unbiased))
            print(f"{name}: MoE layer {k}: the correction bias changes {changed} of {chosen.numel()} choices")
    margins = []
    hooks = [g.register_forward_hook(margin_hook(margins)) for g in gates if hasattr(g, "e_score_correction_bias")]
    tokens, nll = perplexity_sums(model)
    for h in hooks:
        h.remove()
    if margins:
        print(f"{name}: smallest routing margin over the eval windows {min(margins):.3g}")
    golden["ppl.tokens"] = torch.tensor([tokens], dtype=torch.int64)
    golden["ppl.nll_sum"] = torch.tensor([nll], dtype=torch.float64)
    save_file(golden, os.path.join(HERE, name + "-reference.safetensors"))
    print(f"{name}: {len(gates)} MoE layers, {len(out.hidden_states)} hidden states, "
          f"test perplexity {np.exp(nll / tokens):.6f} over {tokens} tokens")


@torch.no_grad()
def fp8_checkpoint(model, folder, block):
    """Rewrites the saved checkpoint with FP8 linear weights and their scales (quantization_config as DeepSeek-V3's)
    and puts the dequantized weights into the model, so that its outputs are transformers' on exactly those."""
    path = os.path.join(folder, "model.safetensors")
    tensors = load_file(path)
    params = dict(model.named_parameters())
    fused = {}
    partial = []
    for key in sorted(tensors):
        if not quantized(key):
            continue
        codes, scale, deq = quantize_fp8(tensors[key], block)
        tensors[key] = codes
        tensors[key + "_scale_inv"] = scale
        if key in params:
            params[key].copy_(deq)
        else:                                   # per-expert key of transformers' fused in-memory experts
            fused[key] = deq
        if tensors[key].shape[0] % block[0] or tensors[key].shape[1] % block[1]:
            partial.append(key)
    for layer_idx, layer in enumerate(model.model.layers):
        experts = getattr(layer.mlp, "experts", None)
        if experts is None:
            continue
        prefix = f"model.layers.{layer_idx}.mlp.experts."
        for e in range(experts.gate_up_proj.shape[0]):
            gate = fused[f"{prefix}{e}.gate_proj.weight"]
            up = fused[f"{prefix}{e}.up_proj.weight"]
            experts.gate_up_proj[e].copy_(torch.cat([gate, up], dim=0))
            experts.down_proj[e].copy_(fused[f"{prefix}{e}.down_proj.weight"])
    save_file(tensors, path, metadata={"format": "pt"})
    with open(os.path.join(folder, "config.json")) as f:
        config = json.load(f)
    config["quantization_config"] = {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
                                     "weight_block_size": list(block)}
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
    print(f"{os.path.basename(folder)}: {sum(quantized(k) for k in tensors)} FP8 weights, partial last blocks in "
          f"{len(partial)} of them (e.g. {partial[0]})")


if __name__ == "__main__":
    make("deepseek-v2-tiny", deepseek_v2(), 20261601)
    make("deepseek-v3-tiny", deepseek_v3(), 20261602)
    # the same architecture with a dense layer of 160 (two row blocks of 128, the last partial), FP8 weights
    make("deepseek-v3-tiny-fp8", deepseek_v3(intermediate_size=160), 20261606, fp8_block=(128, 128))
