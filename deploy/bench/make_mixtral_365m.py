"""Writes the 365M-parameter Mixtral-shaped model of the peer benchmark (docs/benchmarks.md#against-transformers):
hidden 1024, 16 heads of 64 with 8 key/value heads, 4 layers of 8 experts (top 2) of width 3584, the bundled
tokenizer's vocabulary of 1024, random weights (seeded, std 0.02) saved in bfloat16 by transformers.

  python3 deploy/bench/make_mixtral_365m.py OUT_DIR
"""
import os
import shutil
import sys

import torch
from transformers import MixtralConfig, MixtralForCausalLM

TINY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "examples", "models", "mixtral-tiny")


def main():
    out = sys.argv[1]
    torch.manual_seed(0)
    config = MixtralConfig(vocab_size=1024, hidden_size=1024, intermediate_size=3584, num_hidden_layers=4,
                           num_attention_heads=16, num_key_value_heads=8, num_local_experts=8, num_experts_per_tok=2,
                           max_position_embeddings=4096, router_aux_loss_coef=0.02, tie_word_embeddings=False,
                           bos_token_id=0, eos_token_id=0)
    model = MixtralForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(out)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(TINY, name), out)
    print(f"{out}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, bfloat16")


if __name__ == "__main__":
    main()
