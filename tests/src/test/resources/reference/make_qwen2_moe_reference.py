#!/usr/bin/env python3
"""Golden tensors for Qwen2MoeParityTest: a tiny random qwen2_moe checkpoint and its forward pass.

There is no PyTorch/transformers here, so the forward pass below is a NumPy float32 restatement of
transformers 5's Qwen2-MoE (and Mixtral) modelling code, written from the transformers semantics and
independent of the Java implementation. It is validated first on the transformers-produced Mixtral
reference (shared/fixtures/mixtral-tiny-reference.safetensors), then used to produce the Qwen2-MoE files.

    python3 make_qwen2_moe_reference.py                      # writes qwen2-moe-tiny/ and the references
    python3 make_qwen2_moe_reference.py --check-mixtral DIR REF
        # DIR = a Mixtral checkpoint folder, REF = transformers outputs on it; prints max |Δ| per tensor

Shapes: B batch, S sequence, T = B·S tokens, D hidden, H heads, KVH key/value heads, hd head dim,
E experts, K experts per token, I expert intermediate, V vocab, L layers.
Needs only numpy. Everything is float32, as transformers runs it with dtype=float32.
"""
import json
import os
import struct
import sys

import numpy as np

F32 = np.float32

# ---------------------------------------------------------------------------------------------------------
# safetensors: 8-byte little-endian header length, JSON header, raw little-endian data.

_DTYPES = {"F32": np.float32, "I64": np.int64, "F16": np.float16, "I32": np.int32}


def read_safetensors(path):
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    data = blob[8 + n:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        if not 0 <= start <= end <= len(data):
            raise ValueError(f"{path}: tensor {name} offsets {start}..{end} outside data of {len(data)} bytes")
        dtype = np.dtype(_DTYPES[info["dtype"]]).newbyteorder("<")
        arr = np.frombuffer(data[start:end], dtype=dtype).reshape(info["shape"])
        if info["dtype"] == "F16":
            arr = arr.astype(F32)
        out[name] = arr
    return out


def write_safetensors(path, tensors):
    names = {np.float32: "F32", np.int64: "I64"}
    header, chunks, offset = {}, [], 0
    for name in sorted(tensors):
        arr = np.ascontiguousarray(tensors[name])
        raw = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": names[arr.dtype.type], "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for c in chunks:
            f.write(c)


# ---------------------------------------------------------------------------------------------------------
# The forward pass (transformers semantics, float32).

def linear(x, w, b=None):
    """nn.Linear: x [T, in] · wᵀ (w [out, in]) + b."""
    y = (x @ w.T).astype(F32)
    return y if b is None else (y + b).astype(F32)


def rms_norm(x, w, eps):
    """w * (x * rsqrt(mean(x²) + eps)), variance in float32."""
    var = np.mean(x * x, axis=-1, keepdims=True, dtype=F32)
    return (w * (x * (F32(1.0) / np.sqrt(var + F32(eps))))).astype(F32)


def silu(x):
    return (x / (F32(1.0) + np.exp(-x))).astype(F32)


def sigmoid(x):
    return (F32(1.0) / (F32(1.0) + np.exp(-x))).astype(F32)


def softmax(x, axis=-1):
    m = np.max(x, axis=axis, keepdims=True)
    e = np.exp((x - m).astype(F32))
    return (e / np.sum(e, axis=axis, keepdims=True)).astype(F32)


def swiglu(x, gate, up, down):
    """MLP: down(silu(gate(x)) * up(x))."""
    return linear(silu(linear(x, gate)) * linear(x, up), down)


def rope_tables(hd, theta, seq):
    """Default RoPE: inv_freq = 1/θ^(arange(0,hd,2)/hd); emb = cat(freqs, freqs); cos/sin [S, hd]."""
    inv_freq = (F32(1.0) / (F32(theta) ** (np.arange(0, hd, 2).astype(F32) / F32(hd)))).astype(F32)
    freqs = np.outer(np.arange(seq).astype(F32), inv_freq).astype(F32)          # [S, hd/2]
    emb = np.concatenate([freqs, freqs], axis=-1)                                 # [S, hd]
    return np.cos(emb).astype(F32), np.sin(emb).astype(F32)


def rotate_half(x):
    half = x.shape[-1] // 2
    return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def attention(x, p, cfg, B, S, cos, sin):
    """Eager causal GQA attention. x [B·S, D] → [B·S, D]."""
    H, KVH, hd = cfg["H"], cfg["KVH"], cfg["hd"]
    q = linear(x, p["q_w"], p.get("q_b")).reshape(B, S, H, hd).transpose(0, 2, 1, 3)      # [B, H, S, hd]
    k = linear(x, p["k_w"], p.get("k_b")).reshape(B, S, KVH, hd).transpose(0, 2, 1, 3)    # [B, KVH, S, hd]
    v = linear(x, p["v_w"], p.get("v_b")).reshape(B, S, KVH, hd).transpose(0, 2, 1, 3)
    q = (q * cos + rotate_half(q) * sin).astype(F32)
    k = (k * cos + rotate_half(k) * sin).astype(F32)
    k = np.repeat(k, H // KVH, axis=1)                                                    # repeat_kv
    v = np.repeat(v, H // KVH, axis=1)
    scores = (q @ k.transpose(0, 1, 3, 2)).astype(F32) * F32(hd ** -0.5)                  # [B, H, S, S]
    mask = np.triu(np.full((S, S), -np.inf, dtype=F32), k=1)
    probs = softmax((scores + mask).astype(F32), axis=-1)
    ctx = (probs @ v).astype(F32).transpose(0, 2, 1, 3).reshape(B * S, H * hd)
    return linear(ctx, p["o_w"])


def sparse_moe(x, p, cfg):
    """Router (raw logits kept), softmax in float32, top-K, optional renormalisation, experts, shared expert."""
    logits = linear(x, p["gate"])                                                 # [T, E]
    probs = softmax(logits)
    K = cfg["K"]
    # torch.topk: the K largest, descending; a stable sort on -probs keeps the lower index first on ties.
    top = np.argsort(-probs, axis=-1, kind="stable")[:, :K]                       # [T, K]
    w = np.take_along_axis(probs, top, axis=-1)                                   # [T, K]
    if cfg["norm_topk_prob"]:
        w = (w / np.sum(w, axis=-1, keepdims=True)).astype(F32)
    out = np.zeros_like(x)
    for e, (g, u, d) in enumerate(p["experts"]):
        tok, slot = np.nonzero(top == e)
        if len(tok):
            out[tok] += (w[tok, slot][:, None] * swiglu(x[tok], g, u, d)).astype(F32)
    if "shared" in p:
        g, u, d = p["shared"]
        out = out + sigmoid(linear(x, p["shared_gate"])) * swiglu(x, g, u, d)
    return out.astype(F32), logits


def forward(weights, cfg, input_ids):
    """→ logits [B, S, V], hidden_states (L+1) × [B, S, D] (last one after the final norm), router logits."""
    B, S = input_ids.shape
    cos, sin = rope_tables(cfg["hd"], cfg["rope_theta"], S)
    x = weights["embed"][input_ids.reshape(-1)].astype(F32)                       # [T, D]
    hidden_states, router_logits = [], []
    for layer in weights["layers"]:
        hidden_states.append(x.reshape(B, S, -1))
        h = x + attention(rms_norm(x, layer["in_norm"], cfg["eps"]), layer["attn"], cfg, B, S, cos, sin)
        n = rms_norm(h, layer["post_norm"], cfg["eps"])
        if "moe" in layer:
            y, logits = sparse_moe(n, layer["moe"], cfg)
            router_logits.append(logits)
        else:
            y = swiglu(n, *layer["mlp"])
        x = (h + y).astype(F32)
    x = rms_norm(x, weights["norm"], cfg["eps"])
    hidden_states.append(x.reshape(B, S, -1))
    logits = linear(x, weights["lm_head"]).reshape(B, S, -1)
    return logits, hidden_states, router_logits


# ---------------------------------------------------------------------------------------------------------
# Hugging Face checkpoints → the dict the forward pass reads.

def _rope_theta(c):
    rp = c.get("rope_parameters") or {}
    return rp.get("rope_theta", c.get("rope_theta"))


def parse_config(c):
    H = c["num_attention_heads"]
    hd = c.get("head_dim") or c["hidden_size"] // H
    cfg = dict(type=c["model_type"], L=c["num_hidden_layers"], H=H, KVH=c.get("num_key_value_heads") or H, hd=hd,
               eps=c["rms_norm_eps"], rope_theta=_rope_theta(c), K=c["num_experts_per_tok"],
               tie=c.get("tie_word_embeddings", False))
    if c["model_type"] == "mixtral":
        cfg.update(E=c["num_local_experts"], norm_topk_prob=True, qkv_bias=False, sparse=lambda l: True)
    elif c["model_type"] == "qwen2_moe":
        step, only, E = c.get("decoder_sparse_step", 1), c.get("mlp_only_layers", []), c["num_experts"]
        cfg.update(E=E, norm_topk_prob=c.get("norm_topk_prob", False), qkv_bias=c.get("qkv_bias", True),
                   sparse=lambda l: l not in only and E > 0 and (l + 1) % step == 0,
                   shared=c.get("shared_expert_intermediate_size", 0) > 0)
    else:
        raise ValueError(f"unsupported model_type {c['model_type']}")
    return cfg


def gather_weights(t, cfg):
    w = {"embed": t["model.embed_tokens.weight"], "norm": t["model.norm.weight"], "layers": []}
    w["lm_head"] = t["lm_head.weight"] if "lm_head.weight" in t or not cfg["tie"] else w["embed"]
    for l in range(cfg["L"]):
        p = f"model.layers.{l}."
        attn = {f"{n}_w": t[f"{p}self_attn.{n}_proj.weight"] for n in "qkvo"}
        if cfg["qkv_bias"]:
            attn.update({f"{n}_b": t[f"{p}self_attn.{n}_proj.bias"] for n in "qkv"})
        layer = {"in_norm": t[p + "input_layernorm.weight"], "post_norm": t[p + "post_attention_layernorm.weight"],
                 "attn": attn}
        if cfg["type"] == "mixtral":
            m = p + "block_sparse_moe."
            layer["moe"] = {"gate": t[m + "gate.weight"],
                            "experts": [tuple(t[f"{m}experts.{e}.{n}.weight"] for n in ("w1", "w3", "w2"))
                                        for e in range(cfg["E"])]}
        elif cfg["sparse"](l):
            m = p + "mlp."
            moe = {"gate": t[m + "gate.weight"],
                   "experts": [tuple(t[f"{m}experts.{e}.{n}_proj.weight"] for n in ("gate", "up", "down"))
                               for e in range(cfg["E"])]}
            if cfg["shared"]:
                moe["shared"] = tuple(t[f"{m}shared_expert.{n}_proj.weight"] for n in ("gate", "up", "down"))
                moe["shared_gate"] = t[m + "shared_expert_gate.weight"]
            layer["moe"] = moe
        else:
            layer["mlp"] = tuple(t[f"{p}mlp.{n}_proj.weight"] for n in ("gate", "up", "down"))
        w["layers"].append(layer)
    return w


def run_folder(folder, input_ids, config_override=None):
    with open(os.path.join(folder, "config.json")) as f:
        c = json.load(f)
    c.update(config_override or {})
    cfg = parse_config(c)
    return forward(gather_weights(read_safetensors(os.path.join(folder, "model.safetensors")), cfg), cfg, input_ids)


# ---------------------------------------------------------------------------------------------------------

def check_mixtral(folder, reference):
    ref = read_safetensors(reference)
    logits, hidden, router = run_folder(folder, ref["input_ids"])
    worst = 0.0
    rows = [("logits", logits, ref["logits"])]
    rows += [(f"hidden_states.{i}", h, ref[f"hidden_states.{i}"]) for i, h in enumerate(hidden)]
    rows += [(f"router_logits.{i}", r, ref[f"router_logits.{i}"]) for i, r in enumerate(router)]
    for name, ours, theirs in rows:
        d = float(np.max(np.abs(ours.reshape(theirs.shape) - theirs)))
        worst = max(worst, d) if name == "logits" else worst
        print(f"{name}: max |Δ| = {d:.3g}")
    return worst


def qwen2_moe_config():
    return {
        "architectures": ["Qwen2MoeForCausalLM"], "model_type": "qwen2_moe", "vocab_size": 64, "hidden_size": 32,
        "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": None,
        "intermediate_size": 48, "moe_intermediate_size": 16, "shared_expert_intermediate_size": 24,
        "num_experts": 6, "num_experts_per_tok": 2, "norm_topk_prob": False, "decoder_sparse_step": 1,
        "mlp_only_layers": [1], "qkv_bias": True, "rope_theta": 10000.0, "rms_norm_eps": 1e-6,
        "max_position_embeddings": 128, "tie_word_embeddings": False, "hidden_act": "silu",
        "use_sliding_window": False, "router_aux_loss_coef": 0.001, "dtype": "float32",
    }


def random_qwen2_moe(c, rng):
    """HF-named float32 tensors: weights ~ N(0, 0.2), norms ~ 1 + N(0, 0.1), q/k/v biases ~ N(0, 0.1)."""
    D, V, hd = c["hidden_size"], c["vocab_size"], c["hidden_size"] // c["num_attention_heads"]
    q, kv = c["num_attention_heads"] * hd, c["num_key_value_heads"] * hd
    t = {}

    def w(name, *shape, scale=0.2, mean=0.0):
        t[name] = (mean + scale * rng.standard_normal(shape)).astype(F32)

    w("model.embed_tokens.weight", V, D)
    for l in range(c["num_hidden_layers"]):
        p = f"model.layers.{l}."
        w(p + "input_layernorm.weight", D, scale=0.1, mean=1.0)
        for n, rows in (("q", q), ("k", kv), ("v", kv)):
            w(f"{p}self_attn.{n}_proj.weight", rows, D)
            w(f"{p}self_attn.{n}_proj.bias", rows, scale=0.1)
        w(p + "self_attn.o_proj.weight", D, q)
        w(p + "post_attention_layernorm.weight", D, scale=0.1, mean=1.0)
        sparse = l not in c["mlp_only_layers"] and (l + 1) % c["decoder_sparse_step"] == 0
        if sparse:
            I, S = c["moe_intermediate_size"], c["shared_expert_intermediate_size"]
            w(p + "mlp.gate.weight", c["num_experts"], D)
            for e in range(c["num_experts"]):
                w(f"{p}mlp.experts.{e}.gate_proj.weight", I, D)
                w(f"{p}mlp.experts.{e}.up_proj.weight", I, D)
                w(f"{p}mlp.experts.{e}.down_proj.weight", D, I)
            w(p + "mlp.shared_expert.gate_proj.weight", S, D)
            w(p + "mlp.shared_expert.up_proj.weight", S, D)
            w(p + "mlp.shared_expert.down_proj.weight", D, S)
            w(p + "mlp.shared_expert_gate.weight", 1, D)
        else:
            I = c["intermediate_size"]
            w(p + "mlp.gate_proj.weight", I, D)
            w(p + "mlp.up_proj.weight", I, D)
            w(p + "mlp.down_proj.weight", D, I)
    w("model.norm.weight", D, scale=0.1, mean=1.0)
    w("lm_head.weight", V, D)
    return t


def make_qwen2_moe(out_dir, seed=20240611):
    rng = np.random.default_rng(seed)
    c = qwen2_moe_config()
    folder = os.path.join(out_dir, "qwen2-moe-tiny")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(c, f, indent=2)
        f.write("\n")
    write_safetensors(os.path.join(folder, "model.safetensors"), random_qwen2_moe(c, rng))
    input_ids = rng.integers(0, c["vocab_size"], size=(3, 16), dtype=np.int64)

    logits, hidden, router = run_folder(folder, input_ids)
    golden = {"input_ids": input_ids, "logits": logits}
    golden.update({f"hidden_states.{i}": h for i, h in enumerate(hidden)})
    golden.update({f"router_logits.{i}": r for i, r in enumerate(router)})  # raw logits [T, E], MoE layers only
    write_safetensors(os.path.join(out_dir, "qwen2-moe-tiny-reference.safetensors"), golden)

    # Same weights with norm_topk_prob true: logits only.
    normed, _, _ = run_folder(folder, input_ids, {"norm_topk_prob": True})
    write_safetensors(os.path.join(out_dir, "qwen2-moe-tiny-normtopk-reference.safetensors"),
                      {"input_ids": input_ids, "logits": normed})
    print(f"wrote {folder} and references; norm_topk_prob changes logits by up to "
          f"{float(np.max(np.abs(normed - logits))):.3g}")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--check-mixtral":
        print(f"Mixtral logits max |Δ| vs transformers: {check_mixtral(sys.argv[2], sys.argv[3]):.3g}")
    elif len(sys.argv) == 1:
        make_qwen2_moe(os.path.dirname(os.path.abspath(__file__)))
    else:
        sys.exit(__doc__)
