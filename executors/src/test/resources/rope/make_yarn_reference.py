"""YaRN golden for RotaryEmbeddingYarnTest: transformers 5.17's own rotary classes, float32.

Run with torch + transformers 5.17: python make_yarn_reference.py > yarn-reference.json
For each case: the config's rope_parameters, inv_freq [dim/2], attention_scaling (the cos/sin factor), the
softmax scale DeepseekV3Attention uses (qk_head_dim^-1/2 times yarn_get_mscale(factor, mscale_all_dim)^2) and
cos/sin [P, dim] at the listed positions, as DeepseekV3RotaryEmbedding / GptOssRotaryEmbedding return them.
"""
import json

import torch
from transformers import DeepseekV3Config, GptOssConfig
from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3Attention, DeepseekV3RotaryEmbedding
from transformers.models.gpt_oss.modeling_gpt_oss import GptOssRotaryEmbedding

POSITIONS = [0, 1, 7, 100, 4095, 20000]


def deepseek(rope, qk_rope=16, qk_nope=8):
    cfg = DeepseekV3Config(hidden_size=32, num_attention_heads=2, num_key_value_heads=2, q_lora_rank=None,
                           kv_lora_rank=8, qk_rope_head_dim=qk_rope, qk_nope_head_dim=qk_nope, v_head_dim=8,
                           max_position_embeddings=163840, rope_parameters=rope)
    return cfg, DeepseekV3RotaryEmbedding(cfg), DeepseekV3Attention(cfg, 0).scaling


def gpt_oss(rope):
    cfg = GptOssConfig(hidden_size=64, num_attention_heads=2, num_key_value_heads=1, head_dim=32,
                       max_position_embeddings=131072, rope_parameters=rope)
    return cfg, GptOssRotaryEmbedding(cfg), None


CASES = {
    # DeepSeek-V2-Lite's rope_scaling (mscale = mscale_all_dim: cos/sin unscaled, softmax scale × mscale²)
    "deepseek-v2-lite": deepseek({"rope_type": "yarn", "rope_theta": 10000.0, "factor": 40.0,
                                  "original_max_position_embeddings": 4096, "beta_fast": 32, "beta_slow": 1,
                                  "mscale": 0.707, "mscale_all_dim": 0.707}),
    # mscale ≠ mscale_all_dim: both factors differ from 1
    "mscale-differs": deepseek({"rope_type": "yarn", "rope_theta": 10000.0, "factor": 40.0,
                                "original_max_position_embeddings": 4096, "beta_fast": 32, "beta_slow": 1,
                                "mscale": 1.0, "mscale_all_dim": 0.8}),
    # gpt-oss: truncate false, no mscale fields (attention factor 0.1·ln(factor) + 1)
    "gpt-oss": gpt_oss({"rope_type": "yarn", "rope_theta": 150000.0, "factor": 32.0,
                        "original_max_position_embeddings": 4096, "beta_fast": 32.0, "beta_slow": 1.0,
                        "truncate": False}),
}

out = {}
for name, (cfg, rope, scaling) in CASES.items():
    x = torch.zeros(1, dtype=torch.float32)
    pos = torch.tensor([POSITIONS])
    cos, sin = rope(x, pos)
    out[name] = {
        "rope_parameters": {k: v for k, v in cfg.rope_parameters.items()},
        "dim": int(rope.inv_freq.shape[0] * 2),
        "positions": POSITIONS,
        "inv_freq": rope.inv_freq.tolist(),
        "attention_scaling": rope.attention_scaling,
        "softmax_scale": scaling,
        "cos": cos[0].tolist(),
        "sin": sin[0].tolist(),
    }
print(json.dumps(out, indent=1))
