#!/usr/bin/env python3
"""Fused-expert PEFT adapters (target_parameters on mlp.experts.gate_up_proj / down_proj) for FusedPeftAdapterTest.

    /tmp/venv15/bin/python make_fused_peft_adapters.py     # transformers 5.17.0, peft 0.21.0, torch 2.13.0+cpu

PEFT ≥ 0.19.1 wraps a 3-D expert parameter [E, rows, cols] with lora_A = Linear(cols, r·E) and lora_B =
Linear(r·E, rows) (in/out swapped from the parameter's [E, in, out] reading); ≤ 0.19.0 did not swap:
lora_A = Linear(rows, r·E), lora_B = Linear(r·E, cols). In both, lora_A's rows are expert-major (row e·r + j) and
lora_B's columns rank-major (column j·E + e) (peft/tuners/lora/layer.py, ParamWrapper.get_delta_factors):
  ≥ 0.19.1: ΔW_e = B_e · A_e               A_e = A.reshape(E, r, cols)[e], B_e = B.reshape(rows, r, E)[:, :, e]
  ≤ 0.19.0: ΔW_e = (A_e)ᵀ · (B_e)ᵀ         A_e = A.reshape(E, r, rows)[e], B_e = B.reshape(cols, r, E)[:, :, e]
For gate_up_proj [E, 2I, D]: rows = 2I, cols = D; for down_proj [E, D, I]: rows = D, cols = I. With both targeted
the wrappers nest in target_parameters order: the first one's keys carry one more "base_layer." than the second's.

Writes, next to this script, for the bundled tiny Mixtral (D 128, I 256: every shape tells the generation apart):
  fused-peft-mixtral/new/         what PEFT 0.21 saves (peft_version removed, so the shapes alone must decide)
  fused-peft-mixtral/old/         the same ΔW in the ≤ 0.19.0 shapes: A_old_e = (B_new_e)ᵀ, B_old_e = (A_new_e)ᵀ
  fused-peft-mixtral/per-expert/  the same ΔW as SparkMoE's per-expert PEFT keys (gate and up share A_e)
  fused-peft-mixtral/reference.safetensors   input_ids [2, 16] and transformers+PEFT logits [2, 16, V]
and for qwen3-moe-tiny (D 32 = 2I: the gate_up shapes of both generations coincide):
  fused-peft-qwen3/               what PEFT 0.21 saves targeting gate_up_proj only, with its peft_version
(With both parameters targeted, PEFT 0.21 nests the wrapper of gate_up_proj, the parameter transformers declares
first, inside the one of down_proj, whatever order adapter_config.json's target_parameters lists them in; it saved
["mlp.experts.down_proj", "mlp.experts.gate_up_proj"] here.)
The LoRA B matrices are redrawn (PEFT starts them at zero) from a seeded generator.
"""
import json
import os
import shutil

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "../../../../.."))
MIXTRAL = os.path.join(ROOT, "examples/models/mixtral-tiny")
QWEN3 = os.path.join(HERE, "qwen3-moe-tiny")
PREFIX = "base_model.model.model.layers."


def fused_adapter(model_dir, out, r, alpha, seed, parameters=("mlp.experts.gate_up_proj", "mlp.experts.down_proj")):
    """PEFT's own fused adapter on the expert parameters, B redrawn; returns the PEFT model."""
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    config = LoraConfig(r=r, lora_alpha=alpha, target_modules=[], target_parameters=list(parameters))
    peft = get_peft_model(model, config)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
    shutil.rmtree(out, ignore_errors=True)
    peft.save_pretrained(out)
    return peft


def layers_of(tensors):
    return sorted({int(k[len(PREFIX):].split(".")[0]) for k in tensors})


def split_new(tensors, layer, E, r):
    """{gate_up, down} → (A_e [E, r, cols], B_e [E, rows, r]) from the ≥ 0.19.1 tensors."""
    out = {}
    for name, infix in (("gate_up", "base_layer."), ("down", "")):
        a = tensors[f"{PREFIX}{layer}.mlp.experts.{infix}lora_A.weight"]          # [E·r, cols]
        b = tensors[f"{PREFIX}{layer}.mlp.experts.{infix}lora_B.weight"]          # [rows, r·E]
        out[name] = (a.reshape(E, r, -1), b.reshape(b.shape[0], r, E).permute(2, 0, 1))
    return out


def write_adapter(src, dst, tensors, config_edit):
    os.makedirs(dst, exist_ok=True)
    with open(os.path.join(src, "adapter_config.json")) as f:
        config = json.load(f)
    config_edit(config)
    with open(os.path.join(dst, "adapter_config.json"), "w") as f:
        json.dump(config, f, indent=2)
    save_file({k: v.clone().contiguous() for k, v in tensors.items()}, os.path.join(dst, "adapter_model.safetensors"),
              metadata={"format": "pt"})


def drop_version(config):
    config.pop("peft_version", None)


def mixtral():
    base = os.path.join(HERE, "fused-peft-mixtral")
    shutil.rmtree(base, ignore_errors=True)
    new = os.path.join(base, "new")
    peft = fused_adapter(MIXTRAL, new, r=1, alpha=2, seed=20260401)
    with open(os.path.join(MIXTRAL, "config.json")) as f:
        c = json.load(f)
    E, I, r = c["num_local_experts"], c["intermediate_size"], 1
    tensors = load_file(os.path.join(new, "adapter_model.safetensors"))
    write_adapter(new, new, tensors, drop_version)
    os.remove(os.path.join(new, "README.md"))

    old, per_expert = {}, {}
    for layer in layers_of(tensors):
        parts = split_new(tensors, layer, E, r)
        for name, infix in (("gate_up", "base_layer."), ("down", "")):
            a_e, b_e = parts[name]                                                  # [E, r, cols], [E, rows, r]
            # ≤ 0.19.0: A_old_e = (B_new_e)ᵀ [r, rows], B_old_e = (A_new_e)ᵀ [cols, r]
            a_old = b_e.transpose(1, 2).reshape(E * r, -1)                          # row e·r + j
            b_old = a_e.transpose(1, 2).permute(1, 2, 0).reshape(a_e.shape[2], r * E)  # column j·E + e
            old[f"{PREFIX}{layer}.mlp.experts.{infix}lora_A.weight"] = a_old
            old[f"{PREFIX}{layer}.mlp.experts.{infix}lora_B.weight"] = b_old
        a_gu, b_gu = parts["gate_up"]
        a_d, b_d = parts["down"]
        for e in range(E):
            key = f"{PREFIX}{layer}.block_sparse_moe.experts.{e}."
            per_expert[key + "w1.lora_A.weight"] = a_gu[e]
            per_expert[key + "w1.lora_B.weight"] = b_gu[e, :I]
            per_expert[key + "w3.lora_A.weight"] = a_gu[e]
            per_expert[key + "w3.lora_B.weight"] = b_gu[e, I:]
            per_expert[key + "w2.lora_A.weight"] = a_d[e]
            per_expert[key + "w2.lora_B.weight"] = b_d[e]
    write_adapter(new, os.path.join(base, "old"), old, drop_version)

    def per_expert_config(config):
        drop_version(config)
        config["target_parameters"] = None
        config["target_modules"] = ["w1", "w3", "w2"]
    write_adapter(new, os.path.join(base, "per-expert"), per_expert, per_expert_config)

    ids = torch.randint(0, 1024, (2, 16), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        logits = peft.eval()(input_ids=ids).logits
        # the per-expert adapter through PEFT must give the same logits (it checks the conversion above)
        check = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(MIXTRAL, dtype=torch.float32),
                                          os.path.join(base, "per-expert")).eval()(input_ids=ids).logits
    print(f"mixtral: PEFT logits of the fused vs per-expert adapter differ by {(logits - check).abs().max():.3g}")
    save_file({"input_ids": ids, "logits": logits.contiguous()}, os.path.join(base, "reference.safetensors"))


def qwen3():
    out = os.path.join(HERE, "fused-peft-qwen3")
    fused_adapter(QWEN3, out, r=1, alpha=2, seed=20260402, parameters=("mlp.experts.gate_up_proj",))
    for name in os.listdir(out):
        if name.endswith(".md"):
            os.remove(os.path.join(out, name))


if __name__ == "__main__":
    mixtral()
    qwen3()
