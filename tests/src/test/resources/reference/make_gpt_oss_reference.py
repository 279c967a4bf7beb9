#!/usr/bin/env python3
"""Golden tensors for GptOssParityTest, made by transformers itself.

Builds a tiny random gpt_oss with transformers (float32, eager attention), its weights rounded to bf16 values,
and an MXFP4 variant of the same model (the expert weights quantised to MXFP4 by the NumPy recipe below, everything
else identical), and writes their outputs on 3 × 16 random tokens plus the test-split perplexity of the bundled
sysadmin.txt, tokenized by the bundled tokenizer.json:

    /tmp/venv15/bin/python make_gpt_oss_reference.py      # torch (CPU), transformers 5.17, safetensors, numpy

Writes, next to this script:
  gpt-oss-tiny/        config.json, model.safetensors (float32, as save_pretrained writes it), tokenizer.json
  gpt-oss-tiny-mxfp4/  config.json (with quantization_config mxfp4), model.safetensors as the released
                       checkpoints store it: expert weights as *_blocks U8 [E, rows, cols/32, 16] and *_scales U8
                       [E, rows, cols/32], norms F32, every other tensor BF16 (exact: the weights are bf16 values)
  gpt-oss-tiny-reference.safetensors, gpt-oss-tiny-mxfp4-reference.safetensors holding
    input_ids           I64 [3, 16]
    logits              F32 [3, 16, V]
    hidden_states.N     F32 [3, 16, D]   N = 0..L (embeddings, after layers 0..L-2, the final-normed output)
    router_logits.N     F32 [48, E]      the raw router logits (with the router bias) of every layer
    ppl.tokens          I64 [1]          scored tokens of sysadmin.txt's test split in windows of 64
    ppl.nll_sum         F64 [1]          their summed negative log-likelihood (natural log)
  and in the MXFP4 one also
    dequant.gate_up_proj F32 [E, D, 2I]  layer 0's experts dequantised by transformers'
    dequant.down_proj    F32 [E, I, D]   convert_moe_packed_tensors (float32), as the model holds them

The MXFP4 model is run as FAMILIES.md says: transformers' dequantisation leaves bf16 parameters, so the golden is
the float32 model holding the dequantised expert weights (every MXFP4 value is exact in float32 and bf16). The
recipe checks that transformers' dequantisation of the written blocks and scales equals the NumPy one bit for bit.

The weights are redrawn after construction (transformers initialises with std 0.02, which makes every layer nearly
the identity and every router nearly uniform): matrices ~ N(0, 0.2²) (gate_up_proj N(0, 0.6²), so that the clamp
at limit 7 acts on a part of the gate and up values), norm weights ~ 1 + N(0, 0.1²), biases and sinks ~ N(0, 0.5²),
from one seeded torch generator, then rounded to bf16.

What the fixture exercises: YaRN rope scaling (factor 4, truncate false); q/k/v/o biases; a learned sink per head; layer_types sliding, full, sliding with
sliding_window 5 < 16 tokens; 8 experts, top 3, router bias; interleaved gate/up with biases and the clamped
activation; the down bias inside the routing weight.
"""
import json
import os
import shutil

import numpy as np
import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer
from transformers import GptOssConfig, GptOssForCausalLM
from transformers.integrations.mxfp4 import FP4_VALUES, convert_moe_packed_tensors

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "../../../../.."))
TOKENIZER = os.path.join(ROOT, "examples/models/mixtral-tiny/tokenizer.json")
CORPUS = os.path.join(ROOT, "examples/corpus/sysadmin.txt")
WINDOW = 64
BATCH, SEQ = 3, 16
SEED = 20260317
# YaRN as gpt-oss uses it (truncate false), scaled down: factor 4 over an original context of 32 positions
ROPE = {"rope_type": "yarn", "rope_theta": 150000.0, "factor": 4.0, "beta_fast": 32.0, "beta_slow": 1.0,
        "truncate": False, "original_max_position_embeddings": 32}


def gpt_oss():
    return GptOssForCausalLM(GptOssConfig(
        vocab_size=1024, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
        head_dim=8, intermediate_size=32, num_local_experts=8, num_experts_per_tok=3, sliding_window=5,
        layer_types=["sliding_attention", "full_attention", "sliding_attention"], attention_bias=True,
        rope_parameters=ROPE, rms_norm_eps=1e-5, max_position_embeddings=128, tie_word_embeddings=False,
        router_aux_loss_coef=0.0, bos_token_id=0, eos_token_id=0, pad_token_id=None,
        attn_implementation="eager", dtype=torch.float32))


def redraw(model, seed):
    """Every parameter redrawn from one generator, in named_parameters order, rounded to bf16 values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or name.endswith("layernorm.weight"):
                v = 1.0 + 0.1 * torch.randn(p.shape, generator=g)
            elif name.endswith("bias") or name.endswith("sinks"):
                v = 0.5 * torch.randn(p.shape, generator=g)
            elif name.endswith("gate_up_proj"):
                v = 0.6 * torch.randn(p.shape, generator=g)
            else:
                v = 0.2 * torch.randn(p.shape, generator=g)
            p.copy_(v.to(torch.bfloat16).float())


# ---- MXFP4: 32 values along the input dimension share one e8m0 scale; two e2m1 codes per byte ----

LUT = np.array(FP4_VALUES, dtype=np.float32)   # code → value; codes 8..15 are the negatives of 0..7


def quantize_mxfp4(w):
    """w [E, rows, cols] float32 (Linear layout, cols the input) → blocks U8 [E, rows, cols/32, 16], scales U8."""
    e, rows, cols = w.shape
    v = w.reshape(e, rows, cols // 32, 32).astype(np.float64)
    amax = np.abs(v).max(axis=-1)
    # the smallest power of two 2^x with amax / 2^x ≤ 6 (the largest e2m1 magnitude)
    x = np.where(amax > 0, np.ceil(np.log2(np.maximum(amax, 1e-30) / 6.0)), 0).astype(np.int64)
    scaled = v / np.exp2(x)[..., None]
    codes = np.abs(scaled[..., None] - LUT[None, None, None, None, :8].astype(np.float64)).argmin(axis=-1)
    codes = codes + 8 * ((scaled < 0) & (codes > 0))          # sign bit; −0 is never written
    codes = codes.astype(np.uint8)
    blocks = (codes[..., 0::2] | (codes[..., 1::2] << 4)).astype(np.uint8)   # low nibble = even element
    scales = (x + 127).astype(np.uint8)
    return blocks, scales


def dequantize_mxfp4(blocks, scales):
    """The recipe's own dequantisation: [E, rows, cols/32, 16], [E, rows, cols/32] → float32 [E, rows, cols]."""
    lo = LUT[blocks & 0x0F]
    hi = LUT[blocks >> 4]
    vals = np.stack([lo, hi], axis=-1).reshape(*blocks.shape[:-1], 32)
    vals = vals * np.exp2(scales.astype(np.int64) - 127)[..., None].astype(np.float32)
    return vals.reshape(blocks.shape[0], blocks.shape[1], -1).astype(np.float32)


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
def golden(model, name, extra):
    input_ids = torch.randint(0, model.config.vocab_size, (BATCH, SEQ), generator=torch.Generator().manual_seed(SEED))
    out = model(input_ids=input_ids, output_hidden_states=True, output_router_logits=True)
    g = {"input_ids": input_ids, "logits": out.logits.float().contiguous()}
    g.update({f"hidden_states.{i}": h.contiguous() for i, h in enumerate(out.hidden_states)})
    g.update({f"router_logits.{i}": r.contiguous() for i, r in enumerate(out.router_logits)})
    tokens, nll = perplexity_sums(model)
    g["ppl.tokens"] = torch.tensor([tokens], dtype=torch.int64)
    g["ppl.nll_sum"] = torch.tensor([nll], dtype=torch.float64)
    g.update(extra)
    save_file(g, os.path.join(HERE, name + "-reference.safetensors"))
    print(f"{name}: {len(out.router_logits)} MoE layers, {len(out.hidden_states)} hidden states, "
          f"test perplexity {np.exp(nll / tokens):.6f} over {tokens} tokens")
    return out


def clamp_share(model, input_ids):
    """The share of gate values above the limit and of up values outside ±limit in layer 0 (so the test sees both)."""
    seen = {}

    def hook(module, args, kwargs, output):
        x = args[0]
        gate_up = torch.einsum("td,edj->etj", x, module.gate_up_proj) + module.gate_up_proj_bias[:, None, :]
        seen["gate"] = float((gate_up[..., ::2] > module.limit).float().mean())
        seen["up"] = float((gate_up[..., 1::2].abs() > module.limit).float().mean())

    h = model.model.layers[0].mlp.experts.register_forward_hook(hook, with_kwargs=True)
    model(input_ids=input_ids)
    h.remove()
    return seen


def new_folder(name):
    folder = os.path.join(HERE, name)
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    shutil.copy(TOKENIZER, os.path.join(folder, "tokenizer.json"))
    return folder


@torch.no_grad()
def main():
    torch.manual_seed(SEED)
    model = gpt_oss()
    redraw(model, SEED)
    model.eval()

    folder = new_folder("gpt-oss-tiny")
    model.save_pretrained(folder)
    gen = os.path.join(folder, "generation_config.json")
    if os.path.exists(gen):
        os.remove(gen)
    ids = torch.randint(0, 1024, (BATCH, SEQ), generator=torch.Generator().manual_seed(SEED))
    print("layer 0 clamp share (random tokens):", clamp_share(model, ids))
    golden(model, "gpt-oss-tiny", {})

    # the MXFP4 variant: quantise the expert weights as released ([E, out, in] = the Linear layout), dequantise
    state = model.state_dict()
    tensors = {}
    dequant = {}
    for name, p in state.items():
        if name.endswith("mlp.experts.gate_up_proj") or name.endswith("mlp.experts.down_proj"):
            linear = p.transpose(1, 2).contiguous().numpy()          # [E, D, 2I] → [E, 2I, D]; [E, I, D] → [E, D, I]
            blocks, scales = quantize_mxfp4(linear)
            mine = dequantize_mxfp4(blocks, scales)                  # [E, out, in]
            theirs = convert_moe_packed_tensors(torch.from_numpy(blocks), torch.from_numpy(scales),
                                                dtype=torch.float32).numpy()  # [E, in, out]
            assert np.array_equal(mine.transpose(0, 2, 1), theirs), name + ": dequantisations disagree"
            tensors[name + "_blocks"] = blocks
            tensors[name + "_scales"] = scales
            dequant[name] = torch.from_numpy(theirs.copy())
        elif "norm" in name:
            tensors[name] = p.numpy()
        else:
            tensors[name] = p.to(torch.bfloat16).view(torch.uint16).numpy()   # bf16 bits, typed below
    mx = new_folder("gpt-oss-tiny-mxfp4")
    bf16 = {k for k, v in tensors.items() if v.dtype == np.uint16}
    write_safetensors(os.path.join(mx, "model.safetensors"), tensors, bf16)
    config = json.load(open(os.path.join(folder, "config.json")))
    config["quantization_config"] = {"quant_method": "mxfp4", "modules_to_not_convert": [
        "model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens", "lm_head"]}
    with open(os.path.join(mx, "config.json"), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write("\n")

    for name, w in dequant.items():
        state[name].copy_(w)
    model.load_state_dict(state)
    golden(model, "gpt-oss-tiny-mxfp4", {
        "dequant.gate_up_proj": dequant["model.layers.0.mlp.experts.gate_up_proj"].contiguous(),
        "dequant.down_proj": dequant["model.layers.0.mlp.experts.down_proj"].contiguous()})
    check_loads_released(mx)


@torch.no_grad()
def check_loads_released(folder):
    """transformers itself reads the written MXFP4 checkpoint (dequantising on CPU) into the golden's weights."""
    from safetensors.torch import load_file
    from transformers import Mxfp4Config
    m = GptOssForCausalLM.from_pretrained(folder, quantization_config=Mxfp4Config(dequantize=True),
                                          attn_implementation="eager").float().eval()
    g = load_file(os.path.join(HERE, "gpt-oss-tiny-mxfp4-reference.safetensors"))
    assert torch.equal(m.model.layers[0].mlp.experts.gate_up_proj, g["dequant.gate_up_proj"])
    assert torch.equal(m.model.layers[0].mlp.experts.down_proj, g["dequant.down_proj"])
    diff = float((m(input_ids=g["input_ids"]).logits - g["logits"]).abs().max())
    assert diff == 0.0, diff
    print("transformers loads gpt-oss-tiny-mxfp4 (Mxfp4Config(dequantize=True), cast to float32): logits equal")


def write_safetensors(path, tensors, bf16):
    """A safetensors file of NumPy arrays in name order; the uint16 arrays named in bf16 are typed BF16."""
    kinds = {np.dtype(np.uint8): "U8", np.dtype(np.float32): "F32", np.dtype(np.uint16): "BF16"}
    header, chunks, at = {"__metadata__": {"format": "pt"}}, [], 0
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        assert a.dtype != np.uint16 or name in bf16
        header[name] = {"dtype": kinds[a.dtype], "shape": list(a.shape), "data_offsets": [at, at + a.nbytes]}
        chunks.append(a.tobytes())
        at += a.nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little") + text + b"".join(chunks))


if __name__ == "__main__":
    main()
