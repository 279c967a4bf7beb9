package org.sparkmoe.cuda.check;

import org.sparkmoe.cuda.Bf16;
import org.sparkmoe.cuda.CudaLibrary;
import org.sparkmoe.cuda.CudaMoeLoraLayer;
import org.sparkmoe.cuda.CudaMoeLoraLayer.Precision;
import org.sparkmoe.cuda.DeviceBuffer;
import org.sparkmoe.cuda.DevicePlan;
import org.sparkmoe.cuda.ExpertLayer;
import org.sparkmoe.cuda.ResidentExpertLayer;
import org.sparkmoe.routing.RoutingPlan;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.FloatBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Locale;
import java.util.Map;
import java.util.SplittableRandom;

/**
 * Times our bf16 MoE-LoRA layer forward+backward on the cases of {@code deploy/gpu/torch_moe_lora_bench.py}
 * (same shapes, scale 2, LoRA r=16 on w1/w3/w2, frozen base), median of 10 after 3 warm-ups by CUDA events, the
 * same FLOP count; writes JSON. Routing: K distinct uniformly random experts per token, seeded. Beside it, the same
 * pass as executors drive it ({@link ResidentExpertLayer}: x and dOut rounded on the host and copied in, out, dx and
 * the gradients copied back and widened), timed on the host, median of 5 after 2 warm-ups: what the host side adds.
 * Usage: {@code GpuBench OUT_JSON [case,...]}.
 */
public final class GpuBench {
    /** T, D, I, E, K, R as in the torch script. */
    static final Map<String, int[]> CASES = new LinkedHashMap<>();

    static {
        CASES.put("mixtral8x7b_layer", new int[] {8192, 4096, 14336, 8, 2, 16});
        CASES.put("fine_grained_64e", new int[] {8192, 2048, 1408, 64, 6, 16});
        CASES.put("fine_grained_64e_small_batch", new int[] {1024, 2048, 1408, 64, 6, 16});
    }

    public static void main(String[] args) throws IOException {
        String device = CudaLibrary.load();
        System.out.println("device: " + device);
        String names = args.length > 1 ? args[1] : String.join(",", CASES.keySet());
        Map<String, Object> results = new LinkedHashMap<>();
        for (String name : names.split(",")) {
            int[] c = CASES.get(name);
            if (c == null) {
                throw new IllegalArgumentException("unknown case " + name + ", expected one of " + CASES.keySet());
            }
            Map<String, Object> r = run(c[0], c[1], c[2], c[3], c[4], c[5]);
            results.put(name, r);
            System.out.println(name + " " + RawFiles.json(r));
        }
        Files.writeString(Path.of(args[0]), RawFiles.json(results));
    }

    static Map<String, Object> run(int t, int d, int inter, int e, int k, int r) {
        SplittableRandom random = new SplittableRandom(7);
        int[] experts = new int[t * k];
        float[] gates = new float[t * k];
        boolean[] taken = new boolean[e];
        for (int tok = 0; tok < t; tok++) {
            java.util.Arrays.fill(taken, false);
            for (int s = 0; s < k; s++) {
                int ex;
                do {
                    ex = random.nextInt(e);
                } while (taken[ex]);
                taken[ex] = true;
                experts[tok * k + s] = ex;
                gates[tok * k + s] = (float) random.nextDouble();
            }
        }
        RoutingPlan plan = RoutingPlan.build(experts, gates, e, k);
        long le = e;
        try (CudaMoeLoraLayer layer = new CudaMoeLoraLayer(Precision.BF16, e, d, inter, r, 2.0f);
             DevicePlan dp = new DevicePlan(plan.offsets, plan.perm, plan.tokenOfRow, plan.weightOfRow, plan.topK);
             DeviceBuffer x = filled((long) t * d, 1, 1.7f); DeviceBuffer dOut = filled((long) t * d, 2, 1.7f);
             DeviceBuffer out = DeviceBuffer.allocate(2L * t * d); DeviceBuffer dx = DeviceBuffer.allocate(2L * t * d)) {
            try (DeviceBuffer w1 = filled(le * inter * d, 3, 0.035f); DeviceBuffer w3 = filled(le * inter * d, 4, 0.035f);
                 DeviceBuffer w2 = filled(le * d * inter, 5, 0.035f)) {
                layer.setBase(w1, w3, w2);
            }
            try (DeviceBuffer a1 = filled(le * r * d, 6, 0.017f); DeviceBuffer b1 = filled(le * inter * r, 7, 0.017f);
                 DeviceBuffer a3 = filled(le * r * d, 8, 0.017f); DeviceBuffer b3 = filled(le * inter * r, 9, 0.017f);
                 DeviceBuffer a2 = filled(le * r * inter, 10, 0.017f); DeviceBuffer b2 = filled(le * d * r, 11, 0.017f)) {
                layer.setLora(a1, b1, a3, b3, a2, b2);
            }
            CudaMoeLoraLayer.Gradients g = CudaMoeLoraLayer.Gradients.allocate(e, d, inter, r, plan.rows());
            float ms = layer.timeMs(dp, x, out, dOut, dx, g, 3, 10);
            for (DeviceBuffer b : java.util.List.of(g.dA1(), g.dB1(), g.dA3(), g.dB3(), g.dA2(), g.dB2(), g.dGates())) {
                b.close();
            }
            double flops = (double) t * k * (2.0 * d * inter * 3) * 2 + (double) t * k * 3 * (2.0 * (d + inter) * r) * 3;
            Map<String, Object> m = new LinkedHashMap<>();
            m.put("T", t); m.put("D", d); m.put("I", inter); m.put("E", e); m.put("K", k); m.put("R", r);
            m.put("ours_ms", (double) ms);
            m.put("ours_tflops", flops / ms / 1e9);
            m.put("resident_ms", residentMs(t, d, inter, e, k, r, plan));
            m.put("note", String.format(Locale.ROOT, "median of 10 after 3 warm-ups, rows per expert %d..%d",
                    minRows(plan), maxRows(plan)));
            return m;
        }
    }

    /** Median wall ms of ResidentExpertLayer forward+backward from host buffers (weights and LoRA of small values). */
    private static double residentMs(int t, int d, int inter, int e, int k, int r, RoutingPlan plan) {
        SplittableRandom random = new SplittableRandom(11);
        ByteBuffer tile = ByteBuffer.allocateDirect(1 << 20).order(ByteOrder.LITTLE_ENDIAN);   // repeated bf16 values
        for (int i = 0; i < tile.capacity() / 2; i++) {
            tile.putShort(2 * i, Bf16.fromFloat((float) (0.035 * (2 * random.nextDouble() - 1))));
        }
        ResidentExpertLayer.Weights weights = (projection, expert) -> {
            ByteBuffer m = ByteBuffer.allocateDirect(Math.toIntExact(2L * d * inter)).order(ByteOrder.LITTLE_ENDIAN);
            while (m.hasRemaining()) {
                m.put(tile.duplicate().limit(Math.min(tile.capacity(), m.remaining())));
            }
            return m.clear();
        };
        try (ResidentExpertLayer layer = ResidentExpertLayer.upload(0, e, d, inter, r, 2.0f, weights)) {
            long le = e;
            layer.setLora(host(le * r * d, random), host(le * inter * r, random), host(le * r * d, random),
                    host(le * inter * r, random), host(le * r * inter, random), host(le * d * r, random));
            FloatBuffer x = host((long) t * d, random);
            FloatBuffer dOut = host((long) t * d, random);
            FloatBuffer out = host((long) t * d, null);
            FloatBuffer dx = host((long) t * d, null);
            ExpertLayer.Gradients g = new ExpertLayer.Gradients(host(le * r * d, null), host(le * inter * r, null),
                    host(le * r * d, null), host(le * inter * r, null), host(le * r * inter, null),
                    host(le * d * r, null), host((long) plan.rows(), null));
            ExpertLayer.Plan p = new ExpertLayer.Plan(t, k, plan.offsets, plan.perm, plan.tokenOfRow, plan.weightOfRow);
            double[] times = new double[5];
            for (int i = -2; i < times.length; i++) {
                long start = System.nanoTime();
                layer.forward(p, x, out);
                layer.backward(dOut, dx, g);
                if (i >= 0) {
                    times[i] = (System.nanoTime() - start) / 1e6;
                }
            }
            java.util.Arrays.sort(times);
            return times[times.length / 2];
        }
    }

    /** n floats of direct memory, U(−0.5, 0.5) from {@code random}, or zeros when it is null. */
    private static FloatBuffer host(long n, SplittableRandom random) {
        FloatBuffer b = ByteBuffer.allocateDirect(Math.toIntExact(4 * n)).order(ByteOrder.nativeOrder())
                .asFloatBuffer();
        for (int i = 0; random != null && i < n; i++) {
            b.put(i, (float) (random.nextDouble() - 0.5));
        }
        return b;
    }

    private static DeviceBuffer filled(long n, long seed, float bound) {
        DeviceBuffer b = DeviceBuffer.allocate(2 * n);
        b.fillUniform(n, true, seed, -bound, bound);
        return b;
    }

    private static int minRows(RoutingPlan p) {
        int m = Integer.MAX_VALUE;
        for (int i = 0; i + 1 < p.offsets.length; i++) {
            m = Math.min(m, p.tokensOf(i));
        }
        return m;
    }

    private static int maxRows(RoutingPlan p) {
        int m = 0;
        for (int i = 0; i + 1 < p.offsets.length; i++) {
            m = Math.max(m, p.tokensOf(i));
        }
        return m;
    }
}
