"""Prints the GPU speed table: PyTorch per-expert loop vs torch._grouped_mm (torch_moe_lora_bench.py's JSON) vs
ours (org.sparkmoe.cuda.check.GpuBench's JSON), with TFLOP/s against the dense bf16 peak measured here
(torch.matmul 8192^3 on random data, median of 10 after 3 warm-ups). Usage: gpu_table.py TORCH_JSON OURS_JSON"""
import json, sys, torch

def dense_peak():
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16); b = torch.randn_like(a)
    for _ in range(3): a @ b
    torch.cuda.synchronize(); ts = []
    for _ in range(10):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record(); a @ b; e.record(); torch.cuda.synchronize(); ts.append(s.elapsed_time(e))
    return 2 * 8192 ** 3 / sorted(ts)[5] / 1e9

torch_r, ours = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
peak = dense_peak()
print(f"device {torch.cuda.get_device_name()}, dense bf16 peak {peak:.0f} TFLOP/s")
print("| case | loop ms | grouped_mm ms | ours ms | ours vs grouped_mm | ours TFLOP/s | % of dense peak "
      "| resident layer ms (from host buffers) |")
print("|---|---|---|---|---|---|---|---|")
for name, t in torch_r.items():
    o = ours.get(name)
    if o is None: continue
    resident = f"{o['resident_ms']:.1f}" if 'resident_ms' in o else "-"
    print(f"| {name} | {t['loop_ms']:.1f} | {t['grouped_ms']:.2f} | {o['ours_ms']:.2f} | "
          f"{t['grouped_ms'] / o['ours_ms']:.2f}x | {o['ours_tflops']:.0f} | {100 * o['ours_tflops'] / peak:.0f}% "
          f"| {resident} |")
