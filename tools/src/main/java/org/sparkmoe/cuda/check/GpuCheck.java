package org.sparkmoe.cuda.check;

import org.sparkmoe.cuda.CudaGemm;
import org.sparkmoe.cuda.CudaLibrary;
import org.sparkmoe.cuda.CudaMoeLoraLayer;
import org.sparkmoe.cuda.CudaMoeLoraLayer.Precision;
import org.sparkmoe.cuda.DeviceBuffer;
import org.sparkmoe.cuda.DevicePlan;
import org.sparkmoe.routing.RoutingPlan;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;

/**
 * GPU correctness data: seeded random inputs through our CUDA kernels, inputs and outputs written as raw
 * little-endian files plus {@code manifest.json} for {@code deploy/gpu/check_against_torch.py}, which recomputes
 * everything with PyTorch and compares. Cases: the fp32 grouped GEMM (forward, dX, dW, with accumulation and
 * an empty group, odd sizes) and the whole MoE-LoRA SwiGLU layer forward+backward in fp32 and bf16 (an empty
 * expert, partial tiles). Usage: {@code GpuCheck OUT_DIR [SEED]}.
 */
public final class GpuCheck {
    private final RawFiles files;
    private final SplittableRandom random;

    private GpuCheck(Path dir, long seed) {
        this.files = new RawFiles(dir);
        this.random = new SplittableRandom(seed);
    }

    public static void main(String[] args) throws IOException {
        Path dir = Path.of(args[0]);
        Files.createDirectories(dir);
        System.out.println("device: " + CudaLibrary.load());
        GpuCheck check = new GpuCheck(dir, args.length > 1 ? Long.parseLong(args[1]) : 42);
        List<Object> cases = new ArrayList<>();
        cases.add(check.gemm("gemm_f32", new int[] {0, 30, 30, 95, 100, 170}, 50, 37));
        cases.add(check.layer("layer_small_f32", Precision.F32, 200, 64, 96, 6, 2, 16, 5));
        cases.add(check.layer("layer_small_bf16", Precision.BF16, 200, 64, 96, 6, 2, 16, 5));
        cases.add(check.layer("layer_tiles_f32", Precision.F32, 700, 136, 200, 4, 2, 16, 4));
        cases.add(check.layer("layer_tiles_bf16", Precision.BF16, 700, 136, 200, 4, 2, 16, 4));
        cases.add(check.layer("layer_wide_bf16", Precision.BF16, 1024, 512, 704, 8, 2, 16, 8));
        Files.writeString(dir.resolve("manifest.json"), RawFiles.json(RawFiles.map("cases", cases)));
        System.out.println("wrote " + cases.size() + " cases to " + dir);
    }

    private float[] uniform(long n, double bound) {
        float[] v = new float[(int) n];
        for (int i = 0; i < v.length; i++) {
            v[i] = (float) ((2 * random.nextDouble() - 1) * bound);
        }
        return v;
    }

    /** The fp32 grouped GEMM: y0 + x·Wᵀ, dy·W, and dW accumulated onto dW0. */
    private Map<String, Object> gemm(String name, int[] offsets, int out, int in) throws IOException {
        int groups = offsets.length - 1;
        int rows = offsets[groups];
        float[] x = uniform((long) rows * in, 1);
        float[] w = uniform((long) groups * out * in, 1);
        float[] dy = uniform((long) rows * out, 1);
        float[] y0 = uniform((long) rows * out, 1);
        float[] dw0 = uniform((long) groups * out * in, 1);
        try (DeviceBuffer dOff = DeviceBuffer.ofInts(offsets); DeviceBuffer dx = DeviceBuffer.ofFloats(x);
             DeviceBuffer dw = DeviceBuffer.ofFloats(w); DeviceBuffer ddy = DeviceBuffer.ofFloats(dy);
             DeviceBuffer y = DeviceBuffer.ofFloats(y0); DeviceBuffer dxOut = DeviceBuffer.allocate(4L * rows * in);
             DeviceBuffer dW = DeviceBuffer.ofFloats(dw0); DeviceBuffer dWFresh = DeviceBuffer.ofFloats(dw0)) {
            CudaGemm.forward(dx, dw, y, dOff, groups, rows, out, in, true);
            CudaGemm.backwardInput(ddy, dw, dxOut, dOff, groups, rows, out, in, false);
            CudaGemm.backwardWeight(ddy, dx, dW, dOff, groups, rows, out, in, true);
            CudaGemm.backwardWeight(ddy, dx, dWFresh, dOff, groups, rows, out, in, false);
            CudaGemm.synchronize();
            return RawFiles.map("name", name, "kind", "gemm", "groups", groups, "rows", rows, "out", out, "in", in,
                    "offsets", files.ints(name + "_offsets", offsets), "x", files.floats(name + "_x", x),
                    "w", files.floats(name + "_w", w), "dy", files.floats(name + "_dy", dy),
                    "y0", files.floats(name + "_y0", y0), "dw0", files.floats(name + "_dw0", dw0),
                    "y", files.floats(name + "_y", y.readFloats(rows * out)),
                    "dx", files.floats(name + "_dxout", dxOut.readFloats(rows * in)),
                    "dw_acc", files.floats(name + "_dwacc", dW.readFloats(groups * out * in)),
                    "dw", files.floats(name + "_dwfresh", dWFresh.readFloats(groups * out * in)));
        }
    }

    /** The whole layer, forward and backward; experts ≥ usedExperts get no rows. */
    private Map<String, Object> layer(String name, Precision p, int tokens, int d, int inter, int e, int k, int r,
                                      int usedExperts) throws IOException {
        float scale = 2.0f;
        float[] x = uniform((long) tokens * d, 1);
        float[] w1 = uniform((long) e * inter * d, 1 / Math.sqrt(d));
        float[] w3 = uniform((long) e * inter * d, 1 / Math.sqrt(d));
        float[] w2 = uniform((long) e * d * inter, 1 / Math.sqrt(inter));
        float[] a1 = uniform((long) e * r * d, 1 / Math.sqrt(d));
        float[] a3 = uniform((long) e * r * d, 1 / Math.sqrt(d));
        float[] a2 = uniform((long) e * r * inter, 1 / Math.sqrt(inter));
        float[] b1 = uniform((long) e * inter * r, 0.05);
        float[] b3 = uniform((long) e * inter * r, 0.05);
        float[] b2 = uniform((long) e * d * r, 0.05);
        float[] dOut = uniform((long) tokens * d, 1);
        int[] experts = new int[tokens * k];
        float[] gates = new float[tokens * k];
        RoutingPlan plan = RandomRouting.plan(random, tokens, k, e, 0, usedExperts, experts, gates);
        boolean bf = p == Precision.BF16;
        int rows = plan.rows();
        try (CudaMoeLoraLayer layer = new CudaMoeLoraLayer(p, e, d, inter, r, scale);
             DevicePlan dp = new DevicePlan(plan.offsets, plan.perm, plan.tokenOfRow, plan.weightOfRow, plan.topK);
             DeviceBuffer dx0 = up(x, bf); DeviceBuffer dw1 = up(w1, bf); DeviceBuffer dw3 = up(w3, bf);
             DeviceBuffer dw2 = up(w2, bf); DeviceBuffer da1 = up(a1, bf); DeviceBuffer db1 = up(b1, bf);
             DeviceBuffer da3 = up(a3, bf); DeviceBuffer db3 = up(b3, bf); DeviceBuffer da2 = up(a2, bf);
             DeviceBuffer db2 = up(b2, bf); DeviceBuffer dDOut = up(dOut, bf);
             DeviceBuffer out = DeviceBuffer.allocate((long) tokens * d * layer.elementBytes());
             DeviceBuffer dx = DeviceBuffer.allocate((long) tokens * d * layer.elementBytes())) {
            CudaMoeLoraLayer.Gradients g = CudaMoeLoraLayer.Gradients.allocate(e, d, inter, r, rows);
            layer.setBase(dw1, dw3, dw2);
            layer.setLora(da1, db1, da3, db3, da2, db2);
            layer.forward(dp, dx0, out);
            layer.backward(dDOut, dx, g);
            CudaGemm.synchronize();
            float[] dGatesRows = g.dGates().readFloats(rows);
            float[] dGates = new float[rows];
            for (int row = 0; row < rows; row++) {
                dGates[plan.perm[row]] = dGatesRows[row];
            }
            Map<String, Object> m = RawFiles.map("name", name, "kind", "layer", "dtype", bf ? "bf16" : "f32",
                    "T", tokens, "D", d, "I", inter, "E", e, "K", k, "R", r, "scale", scale,
                    "experts", files.ints(name + "_experts", experts), "gates", files.floats(name + "_gates", gates),
                    "x", files.floats(name + "_x", x), "w1", files.floats(name + "_w1", w1),
                    "w3", files.floats(name + "_w3", w3), "w2", files.floats(name + "_w2", w2),
                    "a1", files.floats(name + "_a1", a1), "b1", files.floats(name + "_b1", b1),
                    "a3", files.floats(name + "_a3", a3), "b3", files.floats(name + "_b3", b3),
                    "a2", files.floats(name + "_a2", a2), "b2", files.floats(name + "_b2", b2),
                    "dout", files.floats(name + "_dout", dOut));
            m.put("outputs", RawFiles.map(
                    "out", files.floats(name + "_out", down(out, tokens * d, bf)),
                    "dx", files.floats(name + "_dx", down(dx, tokens * d, bf)),
                    "dA1", files.floats(name + "_dA1", g.dA1().readFloats(e * r * d)),
                    "dB1", files.floats(name + "_dB1", g.dB1().readFloats(e * inter * r)),
                    "dA3", files.floats(name + "_dA3", g.dA3().readFloats(e * r * d)),
                    "dB3", files.floats(name + "_dB3", g.dB3().readFloats(e * inter * r)),
                    "dA2", files.floats(name + "_dA2", g.dA2().readFloats(e * r * inter)),
                    "dB2", files.floats(name + "_dB2", g.dB2().readFloats(e * d * r)),
                    "dgates", files.floats(name + "_dgates", dGates)));
            for (DeviceBuffer b : List.of(g.dA1(), g.dB1(), g.dA3(), g.dB3(), g.dA2(), g.dB2(), g.dGates())) {
                b.close();
            }
            return m;
        }
    }

    private static DeviceBuffer up(float[] v, boolean bf16) {
        return bf16 ? DeviceBuffer.ofBf16(v) : DeviceBuffer.ofFloats(v);
    }

    private static float[] down(DeviceBuffer b, int n, boolean bf16) {
        return bf16 ? b.readBf16(n) : b.readFloats(n);
    }
}
