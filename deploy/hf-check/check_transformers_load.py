"""Loads SparkMoE's surgery outputs with transformers (and its LoRA adapter with PEFT) and compares the
logits with the ones SparkMoE computed for the same input ids (deploy/hf-check/make-outputs.sh writes both).

  python3 deploy/hf-check/check_transformers_load.py OUTPUTS_DIR BASE_MODEL_DIR [--atol 1e-4]

Prints one line per case and exits 1 if any case fails to load or differs by more than --atol.
"""
import argparse
import sys

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

CASES = ["topk3", "dense", "reduce4", "fused2", "adapter", "adapter-fused"]


def load(case, outputs, base):
    if case.startswith("adapter"):
        from peft import PeftModel
        model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
        return PeftModel.from_pretrained(model, f"{outputs}/{case}").merge_and_unload()
    return AutoModelForCausalLM.from_pretrained(f"{outputs}/{case}", dtype=torch.float32)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("outputs")
    p.add_argument("base")
    p.add_argument("--atol", type=float, default=1e-4)
    a = p.parse_args()
    failed = 0
    for case in CASES:
        ours = load_file(f"{a.outputs}/{case}.logits.safetensors")
        ids = load_file(f"{a.outputs}/input_ids.safetensors")["input_ids"]
        try:
            model = load(case, a.outputs, a.base).eval()
            with torch.no_grad():
                theirs = model(input_ids=ids).logits
            diff = (theirs - ours["logits"]).abs().max().item()
            ok = diff <= a.atol
            print(f"{case}: {type(model).__name__} loaded; max |logit diff| = {diff:.3g} "
                  f"({'ok' if ok else 'FAIL'}, atol {a.atol})", flush=True)
        except Exception as e:  # report every case, then fail
            ok = False
            print(f"{case}: FAIL to load or run: {type(e).__name__}: {e}".splitlines()[0], flush=True)
        failed += not ok
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
