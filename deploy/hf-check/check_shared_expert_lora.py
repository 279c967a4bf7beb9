"""Loads a SparkMoE adapter with LoRA on the shared expert (train --shared-expert-lora) with PEFT and compares the
logits with SparkMoE's (sparkmoe logits --adapter on the same input ids):

  python3 deploy/hf-check/check_shared_expert_lora.py BASE_MODEL_DIR ADAPTER_DIR OURS.safetensors INPUT_IDS.safetensors

Prints the adapter keys PEFT reports missing or unexpected, how many shared-expert modules it wrapped, the logit
difference as PEFT applies the adapter, and a control: PEFT's merge plus the shared expert's pairs added by hand
(W += lora_alpha/r · B·A). PEFT 0.21 on transformers 5 maps every gate_proj/up_proj/down_proj target to the fused
experts, so it wraps no shared-expert module and the control is what isolates that (docs/commands.md#adapters-and-merge).
"""
import json
import sys

import torch
from peft import PeftModel, set_peft_model_state_dict
from peft.utils import load_peft_weights
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM


def main():
    base, adapter, ours_file, ids_file = sys.argv[1:5]
    ids = load_file(ids_file)["input_ids"]
    ours = load_file(ours_file)["logits"]
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), adapter)
    result = set_peft_model_state_dict(model, load_peft_weights(adapter))
    print("missing adapter keys:", [k for k in result.missing_keys if "lora_" in k])
    print("unexpected keys:", len(result.unexpected_keys), result.unexpected_keys[:2])
    wrapped = [n for n, _ in model.named_modules() if "shared_expert" in n and n.endswith("lora_A.default")]
    print("shared-expert modules PEFT wrapped:", len(wrapped))
    merged = model.merge_and_unload().eval()
    with torch.no_grad():
        print("max |dlogit| PEFT vs SparkMoE:", (merged(input_ids=ids).logits - ours).abs().max().item())
    config = json.load(open(f"{adapter}/adapter_config.json"))
    scale = config["lora_alpha"] / config["r"]
    weights = load_file(f"{adapter}/adapter_model.safetensors")
    params = dict(merged.named_parameters())
    pairs = 0
    for key, a in weights.items():
        if ".shared_expert" in key and key.endswith("lora_A.weight"):
            module = key[len("base_model.model."):-len(".lora_A.weight")]
            with torch.no_grad():
                params[module + ".weight"] += scale * weights[key.replace("lora_A", "lora_B")] @ a
            pairs += 1
    with torch.no_grad():
        diff = (merged(input_ids=ids).logits - ours).abs().max().item()
    print(f"control: PEFT's merge + {pairs} shared-expert pairs by hand: max |dlogit| vs SparkMoE {diff:.3g}")


if __name__ == "__main__":
    main()
