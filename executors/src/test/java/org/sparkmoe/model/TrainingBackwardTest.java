package org.sparkmoe.model;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.sparkmoe.experts.GradientCheck.gaussian;

import java.util.Random;
import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.experts.GradientCheck;
import org.sparkmoe.experts.SwiGluMlp;

/**
 * The frozen decoder pieces' training pairs: float64 central differences of the input gradient of RMSNorm, GQA
 * attention with RoPE and the causal mask (with q/k/v biases, with a sliding window, with H = KVH) and the dense
 * SwiGLU MLP, under the scalar loss Σ out ⊙ W (so dOut = W); Qwen3's per-head q/k RMSNorm and OLMoE's
 * whole-projection q/k RMSNorm with the clip_qkv clamp, each with an output bias; gpt-oss attention with per-head
 * sinks (input and sink gradients, sliding and full); blockwise attention (GQA, MLA) with blocks that do not divide S
 * (3 × 5 on S = 11), whose output does not depend on the block sizes beyond rounding; and in float32, the training forward bit-identical to the
 * inference forward of each piece.
 */
class TrainingBackwardTest {
    private static final int B = 2;
    private static final int S = 5;
    private static final int D = 6;
    private static final int HD = 4;

    @Test
    void rmsNormInputGradientMatchesFiniteDifferences() {
        Random rnd = new Random(1);
        RmsNorm norm = new RmsNorm(gaussian(rnd, DataType.DOUBLE, 1.0, D), 1e-5);
        INDArray x = gaussian(rnd, DataType.DOUBLE, 1.0, B * S, D);
        INDArray w = gaussian(rnd, DataType.DOUBLE, 1.0, B * S, D);
        INDArray dx = norm.backward(norm.forwardTraining(x), w);
        GradientCheck.check("rmsnorm: x", x, dx, () -> GradientCheck.dot(norm.forwardTraining(x).out(), w));
    }

    /**
     * Both passes read and write a block of whole rows at a time: over rows that fill two blocks and part of a third,
     * the inference forward is the float32 formula's bits row by row, the float32 training forward the inference
     * forward's bits, and the float64 backward is the formula's value row by row, exactly.
     */
    @Test
    void rmsNormTrainingPairIsTheSameOverBlocksOfRows() {
        Random rnd = new Random(21);
        int rows = 2500;                                       // D = 6: blocks of 1365 rows
        INDArray singleWeight = gaussian(rnd, DataType.FLOAT, 1.0, D);
        RmsNorm single = new RmsNorm(singleWeight, 1e-5);
        INDArray xf = gaussian(rnd, DataType.FLOAT, 1.0, rows, D);
        float[] out = single.forward(xf).data().asFloat();
        assertArrayEquals(out, single.forwardTraining(xf).out().data().asFloat());
        float[] wf = singleWeight.data().asFloat();
        float[] xv = xf.data().asFloat();
        for (int t = 0; t < rows; t++) {                       // the formula row by row, as transformers in float32
            double sumSq = 0;
            for (int d = 0; d < D; d++) {
                sumSq += xv[t * D + d] * xv[t * D + d];
            }
            float inv = (float) (1.0 / Math.sqrt((float) (sumSq / D) + 1e-5));
            for (int d = 0; d < D; d++) {
                assertTrue(out[t * D + d] == wf[d] * (xv[t * D + d] * inv), "row " + t);
            }
        }
        INDArray weight = gaussian(rnd, DataType.DOUBLE, 1.0, D);
        RmsNorm norm = new RmsNorm(weight, 1e-5);
        INDArray x = gaussian(rnd, DataType.DOUBLE, 1.0, rows, D);
        INDArray dy = gaussian(rnd, DataType.DOUBLE, 1.0, rows, D);
        RmsNorm.Forward fwd = norm.forwardTraining(x);
        double[] dx = norm.backward(fwd, dy).data().asDouble();
        float[] w = weight.data().asFloat();                   // the norm keeps its weight in float32
        double[] xs = x.data().asDouble();
        double[] dys = dy.data().asDouble();
        for (int t = 0; t < rows; t++) {
            double inv = fwd.inv()[t];
            double dot = 0;
            for (int d = 0; d < D; d++) {
                dot += w[d] * dys[t * D + d] * xs[t * D + d];
            }
            double c = inv * inv * inv * dot / D;
            for (int d = 0; d < D; d++) {
                assertTrue(dx[t * D + d] == inv * w[d] * dys[t * D + d] - xs[t * D + d] * c, "row " + t);
            }
        }
    }

    @Test
    void attentionWithBiasesInputGradientMatchesFiniteDifferences() {
        checkAttention(2, 4, 2, true, null);
    }

    @Test
    void attentionWithSlidingWindowInputGradientMatchesFiniteDifferences() {
        checkAttention(3, 4, 1, false, 3);
    }

    @Test
    void attentionWithoutGroupingInputGradientMatchesFiniteDifferences() {
        checkAttention(4, 2, 2, true, 2);
    }

    @Test
    void attentionWithPerHeadQkNormInputGradientMatchesFiniteDifferences() {
        Random rnd = new Random(11);
        Attention attn = normedAttention(rnd, DataType.DOUBLE, 4, 2, HD, null, 3);
        checkAttention("qwen3 per-head q/k norm", attn, rnd);
    }

    @Test
    void attentionWithWholeQkNormAndClampInputGradientMatchesFiniteDifferences() {
        Random rnd = new Random(12);
        // clip 0.9: roughly a third of the normed q/k values and half of v lie outside [−0.9, 0.9] and are clamped
        Attention attn = normedAttention(rnd, DataType.DOUBLE, 4, 2, 0, 0.9, null);
        checkAttention("olmoe whole q/k norm, clip", attn, rnd);
    }

    @Test
    void attentionWithSinksInputAndSinkGradientsMatchFiniteDifferences() {
        for (Integer window : new Integer[] {3, null}) {
            Random rnd = new Random(14);
            INDArray sinks = gaussian(rnd, DataType.DOUBLE, 1.0, 4);
            INDArray[] weights = sinkAttentionWeights(rnd, DataType.DOUBLE, 4, 2);
            RotaryEmbedding rope = new RotaryEmbedding(HD, 3.0, 16);
            INDArray x = gaussian(rnd, DataType.DOUBLE, 1.0, B * S, D);
            INDArray w = gaussian(rnd, DataType.DOUBLE, 1.0, B * S, D);
            Attention attn = sinkAttention(weights, 4, 2, window, sinks);
            Attention.Gradients g = attn.backwardWithSinks(attn.forwardTraining(x, B, S, rope), w);
            GradientCheck.check("attention sinks window " + window + ": x", x, g.dx(),
                    () -> GradientCheck.dot(attn.forwardTraining(x, B, S, rope).out(), w));
            // the sinks are copied when an attention is built: every evaluation builds one from the perturbed values
            GradientCheck.check("attention sinks window " + window + ": sinks", sinks,
                    org.nd4j.linalg.factory.Nd4j.create(g.dSinks()), () -> GradientCheck.dot(
                            sinkAttention(weights, 4, 2, window, sinks).forwardTraining(x, B, S, rope).out(), w));
        }
    }

    @Test
    void blockwiseAttentionGradientsMatchFiniteDifferencesWithBlocksThatDoNotDivideTheSequence() {
        // S = 11 in query blocks of 3 and key blocks of 5 (and the transpose): grouped-query heads, a sliding window
        // that skips whole key blocks, and sinks, on one sequence of 11 tokens and two of them
        int seq = 11;
        for (int[] blocks : new int[][] {{3, 5}, {5, 3}}) {
            for (Integer window : new Integer[] {4, null}) {
                Random rnd = new Random(16);
                INDArray sinks = gaussian(rnd, DataType.DOUBLE, 1.0, 4);
                INDArray[] weights = sinkAttentionWeights(rnd, DataType.DOUBLE, 4, 2);
                RotaryEmbedding rope = new RotaryEmbedding(HD, 3.0, 16);
                INDArray x = gaussian(rnd, DataType.DOUBLE, 1.0, B * seq, D);
                INDArray w = gaussian(rnd, DataType.DOUBLE, 1.0, B * seq, D);
                Attention attn = blockAttention(weights, window, sinks, blocks);
                Attention.Gradients g = attn.backwardWithSinks(attn.forwardTraining(x, B, seq, rope), w);
                String name = "blocks " + blocks[0] + "×" + blocks[1] + " window " + window;
                GradientCheck.check("attention " + name + ": x", x, g.dx(),
                        () -> GradientCheck.dot(attn.forwardTraining(x, B, seq, rope).out(), w));
                GradientCheck.check("attention " + name + ": sinks", sinks,
                        org.nd4j.linalg.factory.Nd4j.create(g.dSinks()), () -> GradientCheck.dot(
                                blockAttention(weights, window, sinks, blocks).forwardTraining(x, B, seq, rope).out(),
                                w));
            }
        }
        Random rnd = new Random(17);
        LatentAttention mla = latentAttention(rnd, DataType.DOUBLE, true, 3, 5);
        RotaryEmbedding rope = new RotaryEmbedding(HD, 3.0, 16, null, true);
        INDArray x = gaussian(rnd, DataType.DOUBLE, 1.0, B * seq, D);
        INDArray w = gaussian(rnd, DataType.DOUBLE, 1.0, B * seq, D);
        GradientCheck.check("latent attention blocks 3×5: x", x, mla.backward(mla.forwardTraining(x, B, seq, rope), w),
                () -> GradientCheck.dot(mla.forwardTraining(x, B, seq, rope).out(), w));
    }

    @Test
    void blockSizesChangeTheOutputOnlyInTheLastBits() {
        int seq = 11;
        Random rnd = new Random(18);
        INDArray sinks = gaussian(rnd, DataType.DOUBLE, 1.0, 4);
        INDArray[] weights = sinkAttentionWeights(rnd, DataType.DOUBLE, 4, 2);
        RotaryEmbedding rope = new RotaryEmbedding(HD, 3.0, 16);
        INDArray x = gaussian(rnd, DataType.DOUBLE, 1.0, B * seq, D);
        double[] whole = org.sparkmoe.kernels.Flat.values(
                blockAttention(weights, 4, sinks, new int[] {seq, seq}).forward(x, B, seq, rope));
        for (int[] blocks : new int[][] {{3, 5}, {1, 1}, {2, 7}}) {
            double[] blocked = org.sparkmoe.kernels.Flat.values(
                    blockAttention(weights, 4, sinks, blocks).forward(x, B, seq, rope));
            for (int i = 0; i < whole.length; i++) {
                assertTrue(Math.abs(whole[i] - blocked[i]) <= 1e-12 * Math.max(1, Math.abs(whole[i])),
                        "blocks " + blocks[0] + "×" + blocks[1] + " [" + i + "]: " + whole[i] + " vs " + blocked[i]);
            }
        }
    }

    private static Attention blockAttention(INDArray[] w, Integer window, INDArray sinks, int[] blocks) {
        return new Attention(w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[8], ProjectionNorm.IDENTITY,
                ProjectionNorm.IDENTITY, ProjectionNorm.IDENTITY, 4, 2, HD, window, sinks, blocks[0], blocks[1]);
    }

    @Test
    void sinksLowerEveryRowsAttentionMassAndMinusInfinityIsNoSink() {
        Random rnd = new Random(15);
        INDArray[] weights = sinkAttentionWeights(rnd, DataType.FLOAT, 4, 2);
        RotaryEmbedding rope = new RotaryEmbedding(HD, 10000.0, 16);
        INDArray x = gaussian(rnd, DataType.FLOAT, 1.0, B * S, D);
        INDArray noSink = org.nd4j.linalg.factory.Nd4j.valueArrayOf(new long[] {4}, Float.NEGATIVE_INFINITY,
                DataType.FLOAT);
        assertArrayEquals(sinkAttention(weights, 4, 2, 3, null).forward(x, B, S, rope).data().asFloat(),
                sinkAttention(weights, 4, 2, 3, noSink).forward(x, B, S, rope).data().asFloat(), "sink −∞");
        // a sink of +40 takes (almost) all of every row's mass: the context is ~0 and the output ~ the o bias
        INDArray huge = org.nd4j.linalg.factory.Nd4j.valueArrayOf(new long[] {4}, 40f, DataType.FLOAT);
        INDArray out = sinkAttention(weights, 4, 2, null, huge).forward(x, B, S, rope);
        INDArray bias = weights[8].reshape(1, D).repeat(0, B * S);
        assertTrue(out.sub(bias).amaxNumber().doubleValue() < 1e-9, "a dominant sink leaves only the o bias");
    }

    @Test
    void latentAttentionWithPlainQInterleavedRopeInputGradientMatchesFiniteDifferences() {
        checkLatentAttention(21, false, true);
    }

    @Test
    void latentAttentionWithQLoraInputGradientMatchesFiniteDifferences() {
        checkLatentAttention(22, true, false);
    }

    /**
     * MLA with H = 3 heads, dn = 4, dr = HD, dv = 3, kv_lora_rank 5, q_lora_rank 4 (or a plain q_proj), biases on
     * q_a, kv_a and o, a scale other than (dn+dr)^-½ (YaRN's mscale²), θ = 3 so the rope part turns far.
     */
    private static void checkLatentAttention(long seed, boolean qLora, boolean interleaved) {
        Random rnd = new Random(seed);
        LatentAttention attn = latentAttention(rnd, DataType.DOUBLE, qLora);
        RotaryEmbedding rope = new RotaryEmbedding(HD, 3.0, 16, null, interleaved);
        INDArray x = gaussian(rnd, DataType.DOUBLE, 1.0, B * S, D);
        INDArray w = gaussian(rnd, DataType.DOUBLE, 1.0, B * S, D);
        INDArray dx = attn.backward(attn.forwardTraining(x, B, S, rope), w);
        GradientCheck.check("latent attention" + (qLora ? " q_lora" : "") + (interleaved ? " interleaved" : "")
                + ": x", x, dx, () -> GradientCheck.dot(attn.forwardTraining(x, B, S, rope).out(), w));
    }

    private static LatentAttention latentAttention(Random rnd, DataType dt, boolean qLora) {
        return latentAttention(rnd, dt, qLora, org.sparkmoe.kernels.BlockAttention.BLOCK,
                org.sparkmoe.kernels.BlockAttention.BLOCK);
    }

    private static LatentAttention latentAttention(Random rnd, DataType dt, boolean qLora, int queryBlock,
                                                   int keyBlock) {
        int heads = 3;
        int nope = 4;
        int value = 3;
        int latent = 5;
        int qRank = 4;
        LatentAttention.Weights weights = new LatentAttention.Weights(
                qLora ? null : gaussian(rnd, dt, 0.6, heads * (nope + HD), D),
                qLora ? gaussian(rnd, dt, 0.6, qRank, D) : null,
                qLora ? gaussian(rnd, dt, 0.3, qRank) : null,
                qLora ? new RmsNorm(gaussian(rnd, dt, 0.3, qRank).addi(1.0), 1e-6) : null,
                qLora ? gaussian(rnd, dt, 0.6, heads * (nope + HD), qRank) : null,
                gaussian(rnd, dt, 0.6, latent + HD, D), gaussian(rnd, dt, 0.3, latent + HD),
                new RmsNorm(gaussian(rnd, dt, 0.3, latent).addi(1.0), 1e-6),
                gaussian(rnd, dt, 0.6, heads * (nope + value), latent), gaussian(rnd, dt, 0.6, D, heads * value),
                gaussian(rnd, dt, 0.3, D));
        return new LatentAttention(weights, heads, nope, HD, value, 1.3 / Math.sqrt(nope + HD), queryBlock, keyBlock);
    }

    @Test
    void projectionNormGradientMatchesFiniteDifferences() {
        Random rnd = new Random(13);
        for (int chunk : new int[] {HD, 3 * HD}) {
            ProjectionNorm pn = new ProjectionNorm(new RmsNorm(gaussian(rnd, DataType.DOUBLE, 1.0, chunk), 1e-6), 0.8);
            INDArray x = gaussian(rnd, DataType.DOUBLE, 1.0, B * S, 3 * HD);
            INDArray w = gaussian(rnd, DataType.DOUBLE, 1.0, B * S, 3 * HD);
            INDArray dx = pn.backward(pn.forwardTraining(x), w);
            GradientCheck.check("projection norm over " + chunk + ", clip", x, dx,
                    () -> GradientCheck.dot(pn.forwardTraining(x).out(), w));
        }
    }

    @Test
    void denseMlpInputGradientMatchesFiniteDifferences() {
        Random rnd = new Random(5);
        SwiGluMlp mlp = new SwiGluMlp(gaussian(rnd, DataType.DOUBLE, 0.5, 7, D), gaussian(rnd, DataType.DOUBLE, 0.5, 7, D),
                gaussian(rnd, DataType.DOUBLE, 0.5, D, 7));
        INDArray x = gaussian(rnd, DataType.DOUBLE, 1.0, B * S, D);
        INDArray w = gaussian(rnd, DataType.DOUBLE, 1.0, B * S, D);
        INDArray dx = mlp.backward(mlp.forwardTraining(x), w);
        GradientCheck.check("dense mlp: x", x, dx, () -> GradientCheck.dot(mlp.forwardTraining(x).out(), w));
    }

    @Test
    void float32TrainingForwardsAreBitIdenticalToInference() {
        Random rnd = new Random(6);
        RmsNorm norm = new RmsNorm(gaussian(rnd, DataType.FLOAT, 1.0, D), 1e-5);
        INDArray x = gaussian(rnd, DataType.FLOAT, 1.0, B * S, D);
        assertArrayEquals(norm.forward(x).data().asFloat(), norm.forwardTraining(x).out().data().asFloat(),
                "rmsnorm");
        for (Integer window : new Integer[] {null, 2}) {
            Attention attn = attention(rnd, DataType.FLOAT, 4, 2, true, window);
            RotaryEmbedding rope = new RotaryEmbedding(HD, 10000.0, 16);
            assertArrayEquals(attn.forward(x, B, S, rope).data().asFloat(),
                    attn.forwardTraining(x, B, S, rope).out().data().asFloat(), "attention, window " + window);
        }
        SwiGluMlp mlp = new SwiGluMlp(gaussian(rnd, DataType.FLOAT, 0.5, 7, D), gaussian(rnd, DataType.FLOAT, 0.5, 7, D),
                gaussian(rnd, DataType.FLOAT, 0.5, D, 7));
        assertArrayEquals(mlp.forward(x).data().asFloat(), mlp.forwardTraining(x).out().data().asFloat(), "mlp");
        RotaryEmbedding rope = new RotaryEmbedding(HD, 10000.0, 16);
        Attention qwen3 = normedAttention(rnd, DataType.FLOAT, 4, 2, HD, null, 2);
        assertArrayEquals(qwen3.forward(x, B, S, rope).data().asFloat(),
                qwen3.forwardTraining(x, B, S, rope).out().data().asFloat(), "attention, per-head q/k norm");
        Attention olmoe = normedAttention(rnd, DataType.FLOAT, 4, 2, 0, 0.9, null);
        assertArrayEquals(olmoe.forward(x, B, S, rope).data().asFloat(),
                olmoe.forwardTraining(x, B, S, rope).out().data().asFloat(), "attention, whole q/k norm and clamp");
        Attention gptOss = sinkAttention(sinkAttentionWeights(rnd, DataType.FLOAT, 4, 2), 4, 2, 3,
                gaussian(rnd, DataType.FLOAT, 1.0, 4));
        assertArrayEquals(gptOss.forward(x, B, S, rope).data().asFloat(),
                gptOss.forwardTraining(x, B, S, rope).out().data().asFloat(), "attention with sinks, window 3");
    }

    /** wq, wk, wv, wo, bq, bk, bv, then (index 8) bo: gpt-oss attention's weights, every projection with a bias. */
    private static INDArray[] sinkAttentionWeights(Random rnd, DataType dt, int heads, int kvHeads) {
        return new INDArray[] {gaussian(rnd, dt, 0.6, heads * HD, D), gaussian(rnd, dt, 0.6, kvHeads * HD, D),
                gaussian(rnd, dt, 0.6, kvHeads * HD, D), gaussian(rnd, dt, 0.6, D, heads * HD),
                gaussian(rnd, dt, 0.3, heads * HD), gaussian(rnd, dt, 0.3, kvHeads * HD),
                gaussian(rnd, dt, 0.3, kvHeads * HD), null, gaussian(rnd, dt, 0.3, D)};
    }

    private static Attention sinkAttention(INDArray[] w, int heads, int kvHeads, Integer window, INDArray sinks) {
        return new Attention(w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[8], ProjectionNorm.IDENTITY,
                ProjectionNorm.IDENTITY, ProjectionNorm.IDENTITY, heads, kvHeads, HD, window, sinks);
    }

    @Test
    void partialRotaryAttentionGradientMatchesFiniteDifferences() {
        Random rnd = new Random(14);
        // GLM-4.5: per-head q/k norm, q/k/v biases, RoPE on the leading half of each head (rd = 2 of hd = 4)
        Attention attn = normedAttention(rnd, DataType.DOUBLE, 4, 2, HD, null, null);
        checkAttention("glm partial rotary", attn, rnd, new RotaryEmbedding(HD, HD / 2, 3.0, 16));
    }

    private static void checkAttention(String name, Attention attn, Random rnd) {
        checkAttention(name, attn, rnd, new RotaryEmbedding(HD, 3.0, 16));
    }

    private static void checkAttention(String name, Attention attn, Random rnd, RotaryEmbedding rope) {
        INDArray x = gaussian(rnd, DataType.DOUBLE, 1.0, B * S, D);
        INDArray w = gaussian(rnd, DataType.DOUBLE, 1.0, B * S, D);
        INDArray dx = attn.backward(attn.forwardTraining(x, B, S, rope), w);
        GradientCheck.check("attention " + name + ": x", x, dx,
                () -> GradientCheck.dot(attn.forwardTraining(x, B, S, rope).out(), w));
    }

    /**
     * Attention with q/k RMSNorms over chunks of {@code chunk} values (HD: per head as Qwen3; 0: the whole
     * projection as OLMoE), an optional clamp on q, k and v, q/k/v/o biases and an optional window.
     */
    private static Attention normedAttention(Random rnd, DataType dt, int heads, int kvHeads, int chunk, Double clip,
                                             Integer window) {
        int qChunk = chunk == 0 ? heads * HD : chunk;
        int kChunk = chunk == 0 ? kvHeads * HD : chunk;
        ProjectionNorm q = new ProjectionNorm(new RmsNorm(gaussian(rnd, dt, 0.3, qChunk).addi(1.0), 1e-6), clip);
        ProjectionNorm k = new ProjectionNorm(new RmsNorm(gaussian(rnd, dt, 0.3, kChunk).addi(1.0), 1e-6), clip);
        ProjectionNorm v = clip == null ? ProjectionNorm.IDENTITY : new ProjectionNorm(null, clip);
        return new Attention(gaussian(rnd, dt, 0.6, heads * HD, D), gaussian(rnd, dt, 0.6, kvHeads * HD, D),
                gaussian(rnd, dt, 0.6, kvHeads * HD, D), gaussian(rnd, dt, 0.6, D, heads * HD),
                gaussian(rnd, dt, 0.3, heads * HD), gaussian(rnd, dt, 0.3, kvHeads * HD),
                gaussian(rnd, dt, 0.3, kvHeads * HD), gaussian(rnd, dt, 0.3, D), q, k, v, heads, kvHeads, HD, window,
                null);
    }

    private static void checkAttention(long seed, int heads, int kvHeads, boolean bias, Integer window) {
        Random rnd = new Random(seed);
        Attention attn = attention(rnd, DataType.DOUBLE, heads, kvHeads, bias, window);
        // θ = 3: every position rotates by a large angle, so RoPE is far from the identity
        RotaryEmbedding rope = new RotaryEmbedding(HD, 3.0, 16);
        INDArray x = gaussian(rnd, DataType.DOUBLE, 1.0, B * S, D);
        INDArray w = gaussian(rnd, DataType.DOUBLE, 1.0, B * S, D);
        INDArray dx = attn.backward(attn.forwardTraining(x, B, S, rope), w);
        GradientCheck.check("attention " + heads + "/" + kvHeads + (bias ? " bias" : "") + " window " + window + ": x",
                x, dx, () -> GradientCheck.dot(attn.forwardTraining(x, B, S, rope).out(), w));
    }

    private static Attention attention(Random rnd, DataType dt, int heads, int kvHeads, boolean bias, Integer window) {
        return new Attention(gaussian(rnd, dt, 0.6, heads * HD, D), gaussian(rnd, dt, 0.6, kvHeads * HD, D),
                gaussian(rnd, dt, 0.6, kvHeads * HD, D), gaussian(rnd, dt, 0.6, D, heads * HD),
                bias ? gaussian(rnd, dt, 0.3, heads * HD) : null, bias ? gaussian(rnd, dt, 0.3, kvHeads * HD) : null,
                bias ? gaussian(rnd, dt, 0.3, kvHeads * HD) : null, heads, kvHeads, HD, window);
    }
}
