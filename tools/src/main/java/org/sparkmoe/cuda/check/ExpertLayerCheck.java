package org.sparkmoe.cuda.check;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.FloatBuffer;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.SplittableRandom;
import org.sparkmoe.cuda.Bf16;
import org.sparkmoe.cuda.CudaLibrary;
import org.sparkmoe.cuda.ExpertLayer;
import org.sparkmoe.cuda.ReferenceExpertLayer;
import org.sparkmoe.cuda.ResidentExpertLayer;
import org.sparkmoe.routing.RoutingPlan;

/**
 * The GPU expert layer as executors use it ({@link ResidentExpertLayer}: weights uploaded expert by expert from bf16
 * bytes, activations rounded on the way in and widened on the way out) against {@link ReferenceExpertLayer} in
 * float64, on the same bf16-exact weights and LoRA: out, dx, the six LoRA gradients and dGates, each within a
 * relative L2 error of {@value #TOLERANCE}. Two passes per case (two plans), so the second forward replaces the first's
 * plan; the "fine" shape's activations and LoRA gradients take several chunks of the layer's host staging buffer.
 * Prints one line per tensor; exits 1 when any is off. No ND4J: runs from the GPU bundle.
 * Usage: {@code ExpertLayerCheck [SEED]}.
 */
public final class ExpertLayerCheck {
    /** The bf16 bound of GpuCheck: the layer's bf16 storage of activations against a float64 reference. */
    static final double TOLERANCE = 1e-2;

    /** One layer shape. */
    record Shape(String name, int tokens, int hidden, int intermediate, int experts, int topK, int rank) {
    }

    /** Makes the layer under test from the shape, its LoRA scale and the bf16 weights. */
    interface LayerUnderTest {
        ExpertLayer make(Shape s, float scale, ResidentExpertLayer.Weights weights);
    }

    private ExpertLayerCheck() {
    }

    public static void main(String[] args) {
        System.out.println("device: " + CudaLibrary.load());
        long seed = args.length > 0 ? Long.parseLong(args[0]) : 7;
        List<Shape> shapes = List.of(new Shape("small", 200, 64, 96, 6, 2, 16),
                new Shape("tiles", 700, 136, 200, 4, 2, 8), new Shape("fine", 1024, 384, 128, 16, 4, 16));
        List<String> failures = check(shapes, seed, (s, scale, w) -> ResidentExpertLayer.upload(0, s.experts(),
                s.hidden(), s.intermediate(), s.rank(), scale, w));
        failures.forEach(f -> System.out.println("FAILED " + f));
        System.out.println(failures.isEmpty() ? "expert layer check passed" : failures.size() + " tensors off");
        System.exit(failures.isEmpty() ? 0 : 1);
    }

    /** Runs every shape through both layers; returns the tensors whose error passes the tolerance. */
    static List<String> check(List<Shape> shapes, long seed, LayerUnderTest underTest) {
        List<String> failures = new ArrayList<>();
        SplittableRandom random = new SplittableRandom(seed);
        for (Shape s : shapes) {
            float scale = 2.0f;
            int e = s.experts();
            int d = s.hidden();
            int i = s.intermediate();
            int r = s.rank();
            float[] w1 = bf16Exact(random, (long) e * i * d, 1 / Math.sqrt(d));
            float[] w3 = bf16Exact(random, (long) e * i * d, 1 / Math.sqrt(d));
            float[] w2 = bf16Exact(random, (long) e * d * i, 1 / Math.sqrt(i));
            float[][] lora = {bf16Exact(random, (long) e * r * d, 1 / Math.sqrt(d)),
                    bf16Exact(random, (long) e * i * r, 0.05), bf16Exact(random, (long) e * r * d, 1 / Math.sqrt(d)),
                    bf16Exact(random, (long) e * i * r, 0.05), bf16Exact(random, (long) e * r * i, 1 / Math.sqrt(i)),
                    bf16Exact(random, (long) e * d * r, 0.05)};
            float[][] stacks = {w1, w3, w2};
            ResidentExpertLayer.Weights weights = (projection, expert) -> {
                float[] w = stacks[projection];
                int n = w.length / e;
                ByteBuffer b = ByteBuffer.allocateDirect(2 * n).order(ByteOrder.LITTLE_ENDIAN);
                Bf16.round(FloatBuffer.wrap(w, expert * n, n).slice(), b, n);
                return b;
            };
            try (ExpertLayer device = underTest.make(s, scale, weights);
                 ReferenceExpertLayer reference = new ReferenceExpertLayer(e, d, i, r, scale, w1, w3, w2)) {
                for (ExpertLayer layer : List.of(device, reference)) {
                    layer.setLora(FloatBuffer.wrap(lora[0]), FloatBuffer.wrap(lora[1]), FloatBuffer.wrap(lora[2]),
                            FloatBuffer.wrap(lora[3]), FloatBuffer.wrap(lora[4]), FloatBuffer.wrap(lora[5]));
                }
                for (int pass = 0; pass < 2; pass++) {
                    ExpertLayer.Plan plan = plan(random, s);
                    float[] x = bf16Exact(random, (long) s.tokens() * d, 1);
                    float[] dOut = bf16Exact(random, (long) s.tokens() * d, 1);
                    String at = s.name() + " pass " + pass + " ";
                    Outputs got = Outputs.run(device, plan, x, dOut, s);
                    Outputs want = Outputs.run(reference, plan, x, dOut, s);
                    String[] names = {"out", "dx", "dA1", "dB1", "dA3", "dB3", "dA2", "dB2", "dGates"};
                    for (int t = 0; t < names.length; t++) {
                        double error = relativeError(want.all()[t], got.all()[t]);
                        System.out.printf(Locale.ROOT, "%s%-6s relative L2 %.3e%n", at, names[t], error);
                        if (!(error <= TOLERANCE)) {
                            failures.add(at + names[t] + " " + error);
                        }
                    }
                }
            }
        }
        return failures;
    }

    /** What one forward and backward wrote. */
    private record Outputs(float[] out, float[] dx, float[][] lora, float[] dGates) {
        static Outputs run(ExpertLayer layer, ExpertLayer.Plan plan, float[] x, float[] dOut, Shape s) {
            int e = s.experts();
            int d = s.hidden();
            int i = s.intermediate();
            int r = s.rank();
            float[] out = new float[x.length];
            float[] dx = new float[x.length];
            float[][] g = {new float[e * r * d], new float[e * i * r], new float[e * r * d], new float[e * i * r],
                    new float[e * r * i], new float[e * d * r]};
            float[] dGates = new float[plan.rows()];
            layer.forward(plan, FloatBuffer.wrap(x), FloatBuffer.wrap(out));
            layer.backward(FloatBuffer.wrap(dOut), FloatBuffer.wrap(dx), new ExpertLayer.Gradients(
                    FloatBuffer.wrap(g[0]), FloatBuffer.wrap(g[1]), FloatBuffer.wrap(g[2]), FloatBuffer.wrap(g[3]),
                    FloatBuffer.wrap(g[4]), FloatBuffer.wrap(g[5]), FloatBuffer.wrap(dGates)));
            return new Outputs(out, dx, g, dGates);
        }

        float[][] all() {
            return new float[][] {out, dx, lora[0], lora[1], lora[2], lora[3], lora[4], lora[5], dGates};
        }
    }

    /** K distinct experts per token (expert 0 gets none, so an empty group is in every case), random weights. */
    private static ExpertLayer.Plan plan(SplittableRandom random, Shape s) {
        int k = s.topK();
        RoutingPlan p = RandomRouting.plan(random, s.tokens(), k, s.experts(), 1, s.experts(), new int[s.tokens() * k],
                new float[s.tokens() * k]);
        return new ExpertLayer.Plan(s.tokens(), k, p.offsets, p.perm, p.tokenOfRow, p.weightOfRow);
    }

    /** U(−bound, bound) values rounded to bf16, so both layers start from the same numbers. */
    private static float[] bf16Exact(SplittableRandom random, long n, double bound) {
        float[] v = new float[Math.toIntExact(n)];
        for (int k = 0; k < v.length; k++) {
            v[k] = Bf16.round((float) ((2 * random.nextDouble() - 1) * bound));
        }
        return v;
    }

    static double relativeError(float[] want, float[] got) {
        double diff = 0;
        double norm = 0;
        for (int k = 0; k < want.length; k++) {
            diff += ((double) want[k] - got[k]) * ((double) want[k] - got[k]);
            norm += (double) want[k] * want[k];
        }
        return norm == 0 ? (diff == 0 ? 0 : Double.POSITIVE_INFINITY) : Math.sqrt(diff / norm);
    }
}
