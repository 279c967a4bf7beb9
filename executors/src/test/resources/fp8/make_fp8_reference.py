"""FP8 block-dequantization golden for Fp8BlockMatrixTest (torch's float8_e4m3fn, float32).

Run with torch + safetensors: python make_fp8_reference.py   (writes fp8-blocks.safetensors next to this script)
For each case NAME: NAME.weight F8_E4M3 [out, in], NAME.weight_scale_inv F32 [⌈out/bo⌉, ⌈in/bi⌉] and
NAME.dequantized F32 [out, in] = codes.float() · scale per block (DeepSeek's weight_dequant), from weights
~ N(0, 0.2²) quantized per block with scale amax/448. Also all.codes F8_E4M3 [256] holding every byte 0..255 and
all.values F32 [256] their float values as torch decodes them (NaN for 0x7F and 0xFF).
  a: [40, 20] in blocks of 16×8 (3×3 grid, last row and column blocks partial)
  b: [160, 32] in blocks of 128×128 (2×1 grid, the second row block 32 rows, the column block 32 of 128)
"""
import os

import torch
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))


def quantize(w, bo, bi):
    out, inp = w.shape
    rows, cols = -(-out // bo), -(-inp // bi)
    scale = torch.empty(rows, cols)
    codes = torch.empty(out, inp, dtype=torch.float8_e4m3fn)
    deq = torch.empty(out, inp)
    for r in range(rows):
        for c in range(cols):
            tile = w[r * bo:(r + 1) * bo, c * bi:(c + 1) * bi]
            s = tile.abs().max() / 448.0
            q = (tile / s).to(torch.float8_e4m3fn)
            scale[r, c] = s
            codes[r * bo:(r + 1) * bo, c * bi:(c + 1) * bi] = q
            deq[r * bo:(r + 1) * bo, c * bi:(c + 1) * bi] = q.float() * s
    return codes, scale, deq


g = torch.Generator().manual_seed(20261604)
out = {}
for name, shape, block in [("a", (40, 20), (16, 8)), ("b", (160, 32), (128, 128))]:
    codes, scale, deq = quantize(0.2 * torch.randn(shape, generator=g), *block)
    out[name + ".weight"] = codes
    out[name + ".weight_scale_inv"] = scale
    out[name + ".dequantized"] = deq
every = torch.arange(256, dtype=torch.uint8).view(torch.float8_e4m3fn)
out["all.codes"] = every
out["all.values"] = every.float()
save_file(out, os.path.join(HERE, "fp8-blocks.safetensors"))
