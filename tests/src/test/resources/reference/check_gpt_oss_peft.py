#!/usr/bin/env python3
"""Loads a gpt_oss adapter written by `sparkmoe train` with PEFT and compares it with `train --merge`'s checkpoint.

    sparkmoe train --model gpt-oss-tiny ... --train-router --merge --out OUT
    /tmp/venv15/bin/python check_gpt_oss_peft.py gpt-oss-tiny OUT/adapter OUT/merged

Prints PEFT's warnings about missing or unexpected keys (none expected), how far the adapter moves the logits, and
the largest difference between PEFT's adapted logits and transformers' logits on the merged checkpoint (0 on the
tiny fixture with PEFT 0.21.0, transformers 5.17.0).
"""
import sys, torch, warnings
from transformers import GptOssForCausalLM
from peft import PeftModel
base_dir, adapter_dir = sys.argv[1], sys.argv[2]
base = GptOssForCausalLM.from_pretrained(base_dir, attn_implementation="eager", dtype=torch.float32).eval()
ids = torch.randint(0, 1024, (2, 16), generator=torch.Generator().manual_seed(0))
with torch.no_grad():
    plain = base(input_ids=ids).logits.clone()
with warnings.catch_warnings(record=True) as w:
    warnings.simplefilter("always")
    model = PeftModel.from_pretrained(base, adapter_dir).eval()
    msgs = [str(x.message) for x in w if "missing" in str(x.message).lower() or "unexpected" in str(x.message).lower()]
print("warnings about keys:", msgs)
sd = model.state_dict()
print("lora tensors:", sum(1 for k in sd if "lora_" in k), "router saved:", [k for k in sd if "router" in k and "modules_to_save" in k][:2])
with torch.no_grad():
    adapted = model(input_ids=ids).logits
print("max |adapted - base| logits: %.4g" % (adapted - plain).abs().max())
if len(sys.argv) > 3:
    merged = GptOssForCausalLM.from_pretrained(sys.argv[3], attn_implementation="eager", dtype=torch.float32).eval()
    with torch.no_grad():
        m = merged(input_ids=ids).logits
    print("max |PEFT adapted - our merged checkpoint| logits: %.4g" % (adapted - m).abs().max())
