package org.sparkmoe.experts;

import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.indexing.NDArrayIndex;
import org.sparkmoe.kernels.Activations;
import org.sparkmoe.kernels.Workers;
import org.sparkmoe.routing.Routes;

/**
 * The reference low-rank experts, the naive form of "100× more experts" that blew up memory: for every
 * token t and projection P it materialises {@code W_eff(t) = W + Σ_k g_k·s·B_k·A_k} ([I,D], [I,D], [D,I]) and
 * applies it row by row (with expert biases, gpt-oss, adding their routed mix Σ_k g_k·c_k, {@link LowRankBiases}). The backward pass uses the materialised form too: {@code dW_eff(t) = dout[t]ᵀ ⊗ in[t]},
 * {@code din[t] = dout[t]·W_eff(t)}, {@code dA_k += g_k·s·B_kᵀ·dW_eff}, {@code dB_k += g_k·s·dW_eff·A_kᵀ},
 * {@code dL/dg_k = s·⟨dW_eff, B_k·A_k⟩} — independent of the factorised algebra, so the two check each other.
 */
public final class LowRankNaive extends LowRankExperts {

    public LowRankNaive(LowRankWeights weights) {
        super(weights);
    }

    @Override
    public LowRankNaive with(LowRankWeights w) {
        return new LowRankNaive(w);
    }

    private static final class NaivePass extends LowRankPass {
        final INDArray x;    // [T, D]
        final INDArray eff1; // [T, I, D] per-token gate_proj
        final INDArray eff3; // [T, I, D] per-token up_proj
        final INDArray eff2; // [T, D, I] per-token down_proj
        final INDArray h1;   // [T, I]
        final INDArray h3;   // [T, I]
        final INDArray a;    // [T, I]

        NaivePass(PlanRows rows, INDArray x, INDArray eff1, INDArray eff3, INDArray eff2, INDArray h1,
                INDArray h3, INDArray a, INDArray y, long bytes) {
            super(rows, y, bytes);
            this.x = x;
            this.eff1 = eff1;
            this.eff3 = eff3;
            this.eff2 = eff2;
            this.h1 = h1;
            this.h3 = h3;
            this.a = a;
        }
    }

    @Override
    public Pass forward(INDArray x, Routes routes) {
        checkInput(x);
        LowRankWeights w = weights;
        LowRankAdapters ad = w.adapters();
        DataType dt = w.dataType();
        long t = x.size(0);
        long d = w.hidden();
        long i = w.intermediate();
        LowRankScratch scratch = new LowRankScratch();
        PlanRows routing = PlanRows.of(routes, ad.scale, dt, scratch);
        INDArray eff1 = scratch.alloc(dt, t, i, d);                                 // [T, I, D]
        INDArray eff3 = scratch.alloc(dt, t, i, d);                                 // [T, I, D]
        INDArray eff2 = scratch.alloc(dt, t, d, i);                                 // [T, D, I]
        materialise(routing, w.w1(), ad.a1, ad.b1, ad.scale, eff1);
        materialise(routing, w.w3(), ad.a3, ad.b3, ad.scale, eff3);
        materialise(routing, w.w2(), ad.a2, ad.b2, ad.scale, eff2);
        INDArray h1 = scratch.alloc(dt, t, i);                                      // [T, I]
        INDArray h3 = scratch.alloc(dt, t, i);                                      // [T, I]
        apply(x, eff1, h1);
        apply(x, eff3, h3);
        INDArray g = w.hasBiases() ? LowRankBiases.denseWeights(routes, w.experts(), dt, scratch) : null; // [T, E]
        if (g != null) {
            LowRankBiases.add(g, w.c1(), h1);
            LowRankBiases.add(g, w.c3(), h3);
        }
        INDArray a = scratch.count(Activations.gated(w.activation(), h1, h3, Workers.SERIAL)); // [T, I]
        INDArray y = scratch.alloc(dt, t, d);                                       // [T, D]
        apply(a, eff2, y);
        if (g != null) {
            LowRankBiases.add(g, w.c2(), y);
        }
        return new NaivePass(routing, x, eff1, eff3, eff2, h1, h3, a, y, scratch.bytes());
    }

    /** eff[t] = W + Σ_k g_k·s·B_{e_k}·A_{e_k}, eff [T, O, N]. */
    private static void materialise(PlanRows routing, INDArray base, INDArray a, INDArray b, double scale,
            INDArray eff) {
        for (int t = 0; t < routing.tokens; t++) {
            INDArray slice = eff.slice(t).assign(base);                             // [O, N]
            for (int k = 0; k < routing.topK; k++) {
                int e = routing.routes.expert(t, k);
                Nd4j.gemm(b.slice(e), a.slice(e), slice, false, false, routing.routes.weight(t, k) * scale, 1.0);
            }
        }
    }

    /** out[t] = in[t] · eff[t]ᵀ for every token; in [T, N], eff [T, O, N], out [T, O]. */
    private static void apply(INDArray in, INDArray eff, INDArray out) {
        for (int t = 0; t < in.size(0); t++) {
            Nd4j.gemm(row(in, t), eff.slice(t), row(out, t), false, true, 1.0, 0.0);
        }
    }

    private static INDArray row(INDArray m, int t) {
        return m.get(NDArrayIndex.interval(t, t + 1), NDArrayIndex.all());          // [1, ·] view
    }

    @Override
    public ExpertGradients backward(Pass pass, INDArray dy) {
        if (!(pass instanceof NaivePass p)) {
            throw new IllegalArgumentException("naive backward needs a pass from the naive forward, got "
                    + (pass == null ? "null" : pass.getClass().getSimpleName()));
        }
        checkDy(dy, p.y);
        LowRankWeights w = weights;
        LowRankAdapters ad = w.adapters();
        PlanRows routing = p.rows;
        DataType dt = w.dataType();
        long t = dy.size(0);
        double[] dWeightOfPair = new double[routing.tokens * routing.topK];         // dL/dg, pair order

        INDArray dA2 = Nd4j.zeros(dt, ad.a2.shape());
        INDArray dB2 = Nd4j.zeros(dt, ad.b2.shape());
        INDArray da = Nd4j.createUninitialized(dt, t, w.intermediate());            // [T, I]
        projectionBackward(routing, dy, p.a, p.eff2, ad.a2, ad.b2, ad.scale, dA2, dB2, da, dWeightOfPair, false);

        INDArray[] dh = Activations.gatedBackward(w.activation(), p.h1, p.h3, da, Workers.SERIAL); // dh1, dh3 [T, I]

        INDArray dx = Nd4j.createUninitialized(dt, t, w.hidden());                  // [T, D]
        INDArray dA3 = Nd4j.zeros(dt, ad.a3.shape());
        INDArray dB3 = Nd4j.zeros(dt, ad.b3.shape());
        projectionBackward(routing, dh[1], p.x, p.eff3, ad.a3, ad.b3, ad.scale, dA3, dB3, dx, dWeightOfPair, false);
        INDArray dA1 = Nd4j.zeros(dt, ad.a1.shape());
        INDArray dB1 = Nd4j.zeros(dt, ad.b1.shape());
        projectionBackward(routing, dh[0], p.x, p.eff1, ad.a1, ad.b1, ad.scale, dA1, dB1, dx, dWeightOfPair, true);
        if (w.hasBiases()) {
            LowRankBiases.addWeightGradients(routing.routes, dy, w.c2(), dWeightOfPair);
            LowRankBiases.addWeightGradients(routing.routes, dh[0], w.c1(), dWeightOfPair);
            LowRankBiases.addWeightGradients(routing.routes, dh[1], w.c3(), dWeightOfPair);
        }

        return new ExpertGradients(dx, dWeightOfPair, new LoraGradients(dA1, dB1), new LoraGradients(dA3, dB3),
                new LoraGradients(dA2, dB2));
    }

    /**
     * Per token: dW_eff = dout[t]ᵀ ⊗ in[t] [O, N]; din[t] (+)= dout[t]·W_eff(t); for each slot k:
     * G = B_kᵀ·dW_eff [R, N], dA_k += g·s·G, dB_k += g·s·dW_eff·A_kᵀ, dL/dg_k += s·⟨G, A_k⟩.
     */
    private static void projectionBackward(PlanRows routing, INDArray dout, INDArray in, INDArray eff,
            INDArray a, INDArray b, double scale, INDArray dA, INDArray dB, INDArray din, double[] dWeightOfPair,
            boolean accumulateIn) {
        DataType dt = dout.dataType();
        INDArray dEff = Nd4j.createUninitialized(dt, eff.size(1), eff.size(2));     // [O, N]
        INDArray g = Nd4j.createUninitialized(dt, a.size(1), a.size(2));            // [R, N]
        for (int t = 0; t < routing.tokens; t++) {
            Nd4j.gemm(row(dout, t), row(in, t), dEff, true, false, 1.0, 0.0);       // dout[t]ᵀ ⊗ in[t]
            Nd4j.gemm(row(dout, t), eff.slice(t), row(din, t), false, false, 1.0, accumulateIn ? 1.0 : 0.0);
            for (int k = 0; k < routing.topK; k++) {
                int e = routing.routes.expert(t, k);
                double gs = routing.routes.weight(t, k) * scale;
                Nd4j.gemm(b.slice(e), dEff, g, true, false, 1.0, 0.0);              // B_kᵀ · dW_eff
                dWeightOfPair[t * routing.topK + k] += scale * g.mul(a.slice(e)).sumNumber().doubleValue();
                dA.slice(e).addi(g.muli(gs));
                Nd4j.gemm(dEff, a.slice(e), dB.slice(e), false, true, gs, 1.0);     // g·s·dW_eff · A_kᵀ
            }
        }
    }

    @Override
    public long forwardBytes(long t, long d, long i, long e, long k, long r, DataType dt) {
        return PlanRows.bytes(t, k, dt) + dt.width() * (
                3 * t * i * d       // eff1, eff3 [T, I, D], eff2 [T, D, I]
                + 2 * t * i         // h1, h3
                + (weights.hasBiases() ? t * e : 0) // G
                + t * i             // a
                + t * d);           // y
    }
}
