package org.sparkmoe.experts;

import java.util.Arrays;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.sparkmoe.kernels.Activations;
import org.sparkmoe.kernels.GatedActivation;
import org.sparkmoe.kernels.GroupedGemm;
import org.sparkmoe.kernels.Workers;
import org.sparkmoe.routing.RoutingPlan;
import org.sparkmoe.routing.Routes;

/**
 * The E SwiGLU experts of one MoE layer in tensor-ring form ({@code surgery lowrank --form tr}): per projection P the
 * cores of {@link TrFactors}, W_{P,e}[o, i] = trace(G_N[:, e, :]·G_I[:, i, :]·G_O[:, o, :]). A true MoE over the rows
 * of the routing plan, never building an expert's weight. For a projection with input v (per token for w1/w3, per
 * row for w2):
 * <pre>
 *   z   = v·Āi                             [·, r2·r3]   = Σ_i v(i)·G_I[:, i, :] as [r2, r3]
 *   A   = G_N[:, e, :]·z[row]              [N, r1, r3]  per plan row, e = its expert (batched [r1, r2]×[r2, r3])
 *   h   = A·Āo                             [N, out]     h(o) = trace(A·G_O[:, o, :])
 * </pre>
 * and the layer
 * <pre>
 *   h1 = P_gate(x), h3 = P_up(x)           z once per token: T·D·r2·r3 each
 *   act = silu(h1) ⊙ h3                    [N, I]
 *   ys  = P_down(act)                      z per row: N·I·r2·r3
 *   out[t] = Σ g·ys[row]                   [T, D]   the combine of {@link FullExperts}, the same summation order
 * </pre>
 * at O(T·(2·D·r2·r3 + K·(I·r2·r3 + 3·r1·r2·r3 + r1·r3·(2I + D)))) multiply-adds (N = T·K rows) against FullExperts'
 * O(T·K·3·I·D). {@link TrExpertsNaive} (the materialised W_e) is its reference. Inference only: the backward pass
 * (for {@code --distill-steps} and {@code train}) is not built and refuses in one line. FLOAT or DOUBLE; stateless
 * per call.
 */
public final class TrExperts implements ExpertFfn {
    private final TrFactors gate;   // w1: in D, out I
    private final TrFactors up;     // w3: in D, out I
    private final TrFactors down;   // w2: in I, out D
    private final Workers workers;  // the GEMM's threads, for the SwiGLU and the combine

    public TrExperts(TrFactors gate, TrFactors up, TrFactors down, GroupedGemm gemm) {
        long d = gate.inSize();
        long i = gate.outSize();
        check("w3 (up)", up, d, i, gate);
        check("w2 (down)", down, i, d, gate);
        this.gate = gate;
        this.up = up;
        this.down = down;
        this.workers = gemm.workers();
    }

    private static void check(String name, TrFactors f, long in, long out, TrFactors w1) {
        if (f.inSize() != in || f.outSize() != out || f.expertCount() != w1.expertCount() || f.r1() != w1.r1()
                || f.r2() != w1.r2() || f.r3() != w1.r3() || f.dataType() != w1.dataType()) {
            throw new IllegalArgumentException("TR cores of " + name + " must be in " + in + ", out " + out + ", E "
                    + w1.expertCount() + ", ranks " + ranks(w1) + " " + w1.dataType() + " like w1's, got in "
                    + f.inSize() + ", out " + f.outSize() + ", E " + f.expertCount() + ", ranks " + ranks(f) + " "
                    + f.dataType());
        }
    }

    private static String ranks(TrFactors f) {
        return "(" + f.r1() + ", " + f.r2() + ", " + f.r3() + ")";
    }

    /** w1 (gate), w3 (up), w2 (down) in that order (read-only use). */
    public TrFactors[] factors() {
        return new TrFactors[] {gate, up, down};
    }

    @Override
    public int experts() {
        return gate.expertCount();
    }

    @Override
    public int hidden() {
        return (int) gate.inSize();
    }

    @Override
    public DataType dataType() {
        return gate.dataType();
    }

    private record TrPass(INDArray out) implements Pass {
    }

    @Override
    public Pass forward(INDArray x, Routes routes) {
        if (x.rank() != 2 || x.size(1) != hidden() || x.dataType() != dataType()) {
            throw new IllegalArgumentException("TR experts' input must be [T, " + hidden() + "] " + dataType()
                    + ", got " + Arrays.toString(x.shape()) + " " + x.dataType());
        }
        int tokens = (int) x.size(0);
        RoutingPlan plan = routes.plan;
        if (plan.rows() == 0) {
            return new TrPass(Nd4j.zeros(dataType(), tokens, hidden()));
        }
        int[] expertOfRow = RowCombine.expertOfRow(plan);                                     // [N]
        INDArray h1 = expand(gate, x.mmul(gate.inMatrix()), plan.tokenOfRow, expertOfRow);  // [N, I]
        INDArray h3 = expand(up, x.mmul(up.inMatrix()), plan.tokenOfRow, expertOfRow);      // [N, I]
        INDArray act = Activations.gated(GatedActivation.SWIGLU, h1, h3, workers);          // [N, I]
        INDArray ys = expand(down, act.mmul(down.inMatrix()), null, expertOfRow);           // [N, D]
        return new TrPass(RowCombine.combine(ys, routes, tokens, hidden(), dataType(), workers));
    }

    /**
     * (G_N[:, e, :]·z[rowOf])·Āo per row: the rows' [r2, r3] input contractions through their experts' G_N slices and
     * G_O, N·r1·r2·r3 + N·r1·r3·out multiply-adds.
     *
     * @param z           [T, r2·r3] per token (gathered by {@code rowOf}) or [N, r2·r3] per row ({@code rowOf} null)
     * @param expertOfRow [N]
     * @return [N, out]
     */
    private static INDArray expand(TrFactors f, INDArray z, int[] rowOf, int[] expertOfRow) {
        int rows = expertOfRow.length;
        INDArray p = (rowOf == null ? z.dup('c') : Nd4j.pullRows(z, 1, rowOf, 'c'))
                .reshape('c', rows, f.r2(), f.r3());                                          // [N, r2, r3]
        INDArray n = Nd4j.pullRows(f.expertRows(), 1, expertOfRow, 'c')
                .reshape('c', rows, f.r1(), f.r2());                                          // [N, r1, r2]
        INDArray a = Nd4j.matmul(n, p).reshape('c', rows, f.r1() * f.r3());                // [N, r1·r3]
        return a.mmul(f.outMatrix());                                                         // [N, out]
    }

    @Override
    public ExpertGradients backward(Pass pass, INDArray dOut) {
        throw new UnsupportedOperationException("the backward of TR-form experts (surgery lowrank --form tr) is not "
                + "built: such a model runs eval and logits, not train or --distill-steps");
    }
}
