package org.sparkmoe.experts;

import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.sparkmoe.kernels.Activations;
import org.sparkmoe.kernels.GroupedGemm;
import org.sparkmoe.routing.Routes;

/**
 * Low-rank experts in factorised form. Per projection P (in → out): the base product for all tokens,
 * then the K routed LoRA terms over the plan: gather rows [T·K, in] in plan order, shrink with the grouped
 * GEMM to [T·K, R], expand to [T·K, out], scale each row by g·s, scatter-add to [T, out]; with expert biases
 * (gpt-oss) plus their routed mix G·c ({@link LowRankBiases}). No per-token weight matrix exists; the largest LoRA
 * intermediates are [T·K, max(I, D)].
 */
public final class LowRankFactorised extends LowRankExperts {
    private final GroupedGemm gemm;

    public LowRankFactorised(LowRankWeights weights, GroupedGemm gemm) {
        super(weights);
        this.gemm = gemm;
    }

    @Override
    public LowRankFactorised with(LowRankWeights w) {
        return new LowRankFactorised(w, gemm);
    }

    /** Everything the backward pass reads. */
    private static final class FactorisedPass extends LowRankPass {
        final INDArray xg;  // [T·K, D] x gathered in plan order
        final INDArray u1;  // [T·K, R] x·A1ᵀ per row
        final INDArray u3;  // [T·K, R]
        final INDArray h1;  // [T, I]
        final INDArray h3;  // [T, I]
        final INDArray ag;  // [T·K, I] a gathered in plan order
        final INDArray u2;  // [T·K, R]

        FactorisedPass(PlanRows rows, INDArray xg, INDArray u1, INDArray u3, INDArray h1,
                INDArray h3, INDArray ag, INDArray u2, INDArray y, long bytes) {
            super(rows, y, bytes);
            this.xg = xg;
            this.u1 = u1;
            this.u3 = u3;
            this.h1 = h1;
            this.h3 = h3;
            this.ag = ag;
            this.u2 = u2;
        }
    }

    @Override
    public Pass forward(INDArray x, Routes routes) {
        checkInput(x);
        LowRankWeights w = weights;
        LowRankAdapters ad = w.adapters();
        DataType dt = w.dataType();
        long t = x.size(0);
        long tk = t * routes.topK();
        LowRankScratch scratch = new LowRankScratch();
        PlanRows routing = PlanRows.of(routes, ad.scale, dt, scratch);
        INDArray xg = routing.gather(x, scratch);                                   // [T·K, D]
        INDArray expand = scratch.alloc(dt, tk, w.intermediate());                  // [T·K, I] reused by w1, w3
        INDArray pairs = scratch.alloc(dt, tk, w.intermediate());                   // [T·K, I] reused by w1, w3
        INDArray u1 = scratch.alloc(dt, tk, w.rank());                              // [T·K, R]
        INDArray h1 = scratch.alloc(dt, t, w.intermediate());                       // [T, I]
        projectionForward(routing, x, w.w1(), xg, ad.a1, ad.b1, u1, expand, pairs, h1);
        INDArray u3 = scratch.alloc(dt, tk, w.rank());                              // [T·K, R]
        INDArray h3 = scratch.alloc(dt, t, w.intermediate());                       // [T, I]
        projectionForward(routing, x, w.w3(), xg, ad.a3, ad.b3, u3, expand, pairs, h3);
        INDArray g = w.hasBiases() ? LowRankBiases.denseWeights(routes, w.experts(), dt, scratch) : null; // [T, E]
        if (g != null) {
            LowRankBiases.add(g, w.c1(), h1);
            LowRankBiases.add(g, w.c3(), h3);
        }
        INDArray a = scratch.count(Activations.gated(w.activation(), h1, h3, gemm.workers())); // [T, I]
        INDArray ag = routing.gather(a, scratch);                                   // [T·K, I]
        INDArray u2 = scratch.alloc(dt, tk, w.rank());                              // [T·K, R]
        INDArray expand2 = scratch.alloc(dt, tk, w.hidden());                       // [T·K, D]
        INDArray pairs2 = scratch.alloc(dt, tk, w.hidden());                        // [T·K, D]
        INDArray y = scratch.alloc(dt, t, w.hidden());                              // [T, D]
        projectionForward(routing, a, w.w2(), ag, ad.a2, ad.b2, u2, expand2, pairs2, y);
        if (g != null) {
            LowRankBiases.add(g, w.c2(), y);
        }
        return new FactorisedPass(routing, xg, u1, u3, h1, h3, ag, u2, y, scratch.bytes());
    }

    /**
     * out = in·Wᵀ + scatter(g·s ⊙ (ing·A_eᵀ)·B_eᵀ).
     *
     * @param in     [T, N]
     * @param base   [O, N] frozen
     * @param ing    [T·K, N] in gathered in plan order
     * @param a      [E, R, N]
     * @param b      [E, O, R]
     * @param u      [T·K, R] written: the shrink, kept for backward
     * @param expand [T·K, O] scratch
     * @param pairs  [T·K, O] scratch
     * @param out    [T, O] written
     */
    private void projectionForward(PlanRows routing, INDArray in, INDArray base, INDArray ing,
            INDArray a, INDArray b, INDArray u, INDArray expand, INDArray pairs, INDArray out) {
        int[] offsets = routing.plan.offsets;
        Nd4j.gemm(in, base, out, false, true, 1.0, 0.0);                            // in · Wᵀ
        gemm.forward(ing, a, offsets, u);                                           // u = ing · A_eᵀ
        gemm.forward(u, b, offsets, expand);                                        // u · B_eᵀ
        expand.muliColumnVector(routing.rowScale);                                  // · g·s per row
        routing.scatterAdd(expand, pairs, out);                                     // out[token] += row
    }

    @Override
    public ExpertGradients backward(Pass pass, INDArray dy) {
        if (!(pass instanceof FactorisedPass p)) {
            throw new IllegalArgumentException("factorised backward needs a pass from the factorised forward, got "
                    + (pass == null ? "null" : pass.getClass().getSimpleName()));
        }
        checkDy(dy, p.y);
        LowRankWeights w = weights;
        LowRankAdapters ad = w.adapters();
        PlanRows routing = p.rows;
        DataType dt = w.dataType();
        long t = dy.size(0);
        long tk = routing.plan.rows();
        INDArray dWeight = Nd4j.zeros(dt, tk, 1);                                   // [T·K, 1] dL/dg per row
        LowRankScratch none = new LowRankScratch();

        // down_proj (last in forward, first here)
        INDArray dA2 = Nd4j.createUninitialized(dt, ad.a2.shape());                 // [E, R, I]
        INDArray dB2 = Nd4j.createUninitialized(dt, ad.b2.shape());                 // [E, D, R]
        INDArray da = Nd4j.createUninitialized(dt, t, w.intermediate());            // [T, I]
        INDArray dag = Nd4j.zeros(dt, tk, w.intermediate());                        // [T·K, I]
        projectionBackward(routing, dy, w.w2(), p.ag, ad.a2, ad.b2, p.u2, ad.scale, dA2, dB2, da, dag, dWeight,
                false, none);
        routing.scatterAdd(dag, Nd4j.createUninitialized(dt, tk, w.intermediate()), da);

        // a = f(h1, h3)
        INDArray[] dh = Activations.gatedBackward(w.activation(), p.h1, p.h3, da, gemm.workers()); // dh1, dh3 [T, I]

        // up_proj, then gate_proj (reverse of forward)
        INDArray dx = Nd4j.createUninitialized(dt, t, w.hidden());                  // [T, D]
        INDArray dxg = Nd4j.zeros(dt, tk, w.hidden());                              // [T·K, D]
        INDArray dA3 = Nd4j.createUninitialized(dt, ad.a3.shape());
        INDArray dB3 = Nd4j.createUninitialized(dt, ad.b3.shape());
        projectionBackward(routing, dh[1], w.w3(), p.xg, ad.a3, ad.b3, p.u3, ad.scale, dA3, dB3, dx, dxg, dWeight,
                false, none);
        INDArray dA1 = Nd4j.createUninitialized(dt, ad.a1.shape());
        INDArray dB1 = Nd4j.createUninitialized(dt, ad.b1.shape());
        projectionBackward(routing, dh[0], w.w1(), p.xg, ad.a1, ad.b1, p.u1, ad.scale, dA1, dB1, dx, dxg, dWeight,
                true, none);
        routing.scatterAdd(dxg, Nd4j.createUninitialized(dt, tk, w.hidden()), dx);  // reverse of the gather of x
        double[] dWeightOfPair = routing.byPair(dWeight);
        if (w.hasBiases()) {
            LowRankBiases.addWeightGradients(routing.routes, dy, w.c2(), dWeightOfPair);
            LowRankBiases.addWeightGradients(routing.routes, dh[0], w.c1(), dWeightOfPair);
            LowRankBiases.addWeightGradients(routing.routes, dh[1], w.c3(), dWeightOfPair);
        }
        return new ExpertGradients(dx, dWeightOfPair, new LoraGradients(dA1, dB1),
                new LoraGradients(dA3, dB3), new LoraGradients(dA2, dB2));
    }

    /**
     * Reverse of {@link #projectionForward}: gather dout, (router) dL/dg += s·⟨dout_row·B_e, u_row⟩, scale by g·s,
     * expand backward (dB, du), shrink backward (dA, ding += du·A_e), base (din (+)= dout·W).
     *
     * @param dout    [T, O]
     * @param dA      [E, R, N] written
     * @param dB      [E, O, R] written
     * @param din     [T, N] written, or accumulated when {@code accumulateIn}
     * @param ding    [T·K, N] accumulated
     * @param dWeight [T·K, 1] accumulated
     */
    private void projectionBackward(PlanRows routing, INDArray dout, INDArray base, INDArray ing,
            INDArray a, INDArray b, INDArray u, double scale, INDArray dA, INDArray dB, INDArray din,
            INDArray ding, INDArray dWeight, boolean accumulateIn, LowRankScratch scratch) {
        int[] offsets = routing.plan.offsets;
        INDArray dexpand = routing.gather(dout, scratch);                           // [T·K, O] reverse of scatter
        INDArray du = Nd4j.createUninitialized(dout.dataType(), u.shape());         // [T·K, R]
        gemm.backwardInput(dexpand, b, offsets, du, false);                         // dout_row · B_e
        dWeight.addi(du.mul(u).sum(true, 1).muli(scale));                           // dL/dg = s·⟨dout·B_e, u⟩
        du.muliColumnVector(routing.rowScale);                                      // du = g·s·dout·B_e
        dexpand.muliColumnVector(routing.rowScale);                                 // reverse of the row scale
        gemm.backwardWeight(dexpand, u, offsets, dB, false);                        // dB_e = dexpandᵀ · u
        gemm.backwardWeight(du, ing, offsets, dA, false);                           // dA_e = duᵀ · ing
        gemm.backwardInput(du, a, offsets, ding, true);                             // ding += du · A_e
        Nd4j.gemm(dout, base, din, false, false, 1.0, accumulateIn ? 1.0 : 0.0);   // din (+)= dout · W
    }

    @Override
    public long forwardBytes(long t, long d, long i, long e, long k, long r, DataType dt) {
        long tk = t * k;
        return PlanRows.bytes(t, k, dt) + dt.width() * (
                tk * d              // xg
                + 2 * tk * i        // expand, pairs (shared by w1 and w3)
                + 2 * tk * r        // u1, u3
                + 2 * t * i         // h1, h3
                + (weights.hasBiases() ? t * e : 0) // G
                + t * i             // a
                + tk * i            // ag
                + tk * r            // u2
                + 2 * tk * d        // expand2, pairs2
                + t * d);           // y
    }
}
