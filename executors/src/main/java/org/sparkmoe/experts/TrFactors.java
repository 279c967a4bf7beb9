package org.sparkmoe.experts;

import java.util.Arrays;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.sparkmoe.kernels.NativeBuffers;

/**
 * One projection (in → out) of E experts in tensor-ring form, the TR decomposition of their stacked weights
 * W [E, out, in] (what {@code surgery lowrank --form tr} writes) by three cores
 * <pre>
 *   G_N [r1, E, r2]     G_I [r2, in, r3]     G_O [r3, out, r1]
 *   W[e, o, i] = trace(G_N[:, e, :] · G_I[:, i, :] · G_O[:, o, :])
 * </pre>
 * — the μMoE TR layer of {@code org.sparkmoe.mumoe} with a one-hot gate on expert e, its cores laid out as the same
 * matrices (held here, small: (r1·r2·E + r2·r3·in + r3·r1·out) elements each):
 * <pre>
 *   Ān [E, r1·r2]     row e = G_N[:, e, :]
 *   Āi [in, r2·r3]    row i = G_I[:, i, :]
 *   Āo [r1·r3, out]   column o, entry (a, c) = G_O[c, o, a]
 * </pre>
 * FLOAT or DOUBLE, one type for the three.
 */
public final class TrFactors {
    private final INDArray experts;      // G_N [r1, E, r2]
    private final INDArray in;           // G_I [r2, in, r3]
    private final INDArray out;          // G_O [r3, out, r1]
    private final INDArray expertRows;   // Ān [E, r1·r2]
    private final INDArray inMatrix;     // Āi [in, r2·r3]
    private final INDArray outMatrix;    // Āo [r1·r3, out]

    /**
     * @param experts G_N [r1, E, r2]
     * @param in      G_I [r2, in, r3]
     * @param out     G_O [r3, out, r1]
     */
    public TrFactors(INDArray experts, INDArray in, INDArray out) {
        this(ring(experts, in, out), in, out, unfold(experts), unfold(in),
                out.permute(2, 0, 1).dup('c').reshape('c', out.size(2) * out.size(0), out.size(1)));
    }

    /**
     * The cores from their matrix layouts (gradients are taken in them: {@link TrExperts#backward}), each folded once.
     *
     * @param expertRows Ān [E, r1·r2]
     * @param inMatrix   Āi [in, r2·r3]
     * @param outMatrix  Āo [r1·r3, out]
     */
    static TrFactors ofMatrices(INDArray expertRows, INDArray inMatrix, INDArray outMatrix, long r1, long r3) {
        long r2 = expertRows.size(1) / r1;
        INDArray experts = fold(expertRows, r1, r2);                                              // [r1, E, r2]
        INDArray out = outMatrix.reshape('c', r1, r3, outMatrix.size(1)).permute(1, 2, 0).dup('c');  // [r3, out, r1]
        return new TrFactors(experts, fold(inMatrix, r2, r3), out, expertRows, inMatrix, outMatrix);
    }

    private TrFactors(INDArray experts, INDArray in, INDArray out, INDArray expertRows, INDArray inMatrix,
            INDArray outMatrix) {
        this.experts = experts;
        this.in = in;
        this.out = out;
        this.expertRows = expertRows;
        this.inMatrix = inMatrix;
        this.outMatrix = outMatrix;
    }

    /** Checks that the three cores close one ring in one type; returns G_N. */
    private static INDArray ring(INDArray experts, INDArray in, INDArray out) {
        if (experts.rank() != 3 || in.rank() != 3 || out.rank() != 3 || in.size(0) != experts.size(2)
                || out.size(0) != in.size(2) || out.size(2) != experts.size(0)) {
            throw new IllegalArgumentException("TR cores must be G_N [r1, E, r2], G_I [r2, in, r3], G_O [r3, out, r1] "
                    + "of one ring, got " + Arrays.toString(experts.shape()) + ", " + Arrays.toString(in.shape())
                    + ", " + Arrays.toString(out.shape()));
        }
        DataType dt = experts.dataType();
        if ((dt != DataType.FLOAT && dt != DataType.DOUBLE) || in.dataType() != dt || out.dataType() != dt) {
            throw new IllegalArgumentException("TR cores must all be FLOAT or all DOUBLE, got " + dt + ", "
                    + in.dataType() + ", " + out.dataType());
        }
        return experts;
    }

    /** A core C [left, n, right] as the matrix [n, left·right], row j = C[:, j, :]. */
    public static INDArray unfold(INDArray core) {
        return core.permute(1, 0, 2).dup('c').reshape('c', core.size(1), core.size(0) * core.size(2));
    }

    /** The reverse of {@link #unfold}: the matrix [n, left·right] as the core C [left, n, right]. */
    static INDArray fold(INDArray matrix, long left, long right) {
        return matrix.reshape('c', matrix.size(0), left, right).permute(1, 0, 2).dup('c');
    }

    /** G_N [r1, E, r2]. */
    public INDArray experts() {
        return experts;
    }

    /** G_I [r2, in, r3]. */
    public INDArray in() {
        return in;
    }

    /** G_O [r3, out, r1]. */
    public INDArray out() {
        return out;
    }

    /** Ān [E, r1·r2]. */
    public INDArray expertRows() {
        return expertRows;
    }

    /** Āi [in, r2·r3]. */
    public INDArray inMatrix() {
        return inMatrix;
    }

    /** Āo [r1·r3, out]. */
    public INDArray outMatrix() {
        return outMatrix;
    }

    /** E. */
    public int expertCount() {
        return (int) experts.size(1);
    }

    public long r1() {
        return experts.size(0);
    }

    public long r2() {
        return experts.size(2);
    }

    public long r3() {
        return in.size(2);
    }

    public long inSize() {
        return in.size(1);
    }

    public long outSize() {
        return out.size(1);
    }

    public DataType dataType() {
        return experts.dataType();
    }

    /** r1·r2·E + r2·r3·in + r3·r1·out. */
    public long parameters() {
        return experts.length() + in.length() + out.length();
    }

    /**
     * Expert e's output-side rows V_e [out, r2·r3], V_e[o, (b, c)] = (G_O[:, o, :]·G_N[:, e, :])[c, b], so that
     * W_e = V_e·Āiᵀ.
     */
    public INDArray outRows(int e) {
        return outRows(unfold(out), expertRows.getRow(e).reshape('c', r1(), r2()));
    }

    /**
     * V [n, r2·r3] of some output rows: V[o, (b, c)] = Σ_a G_O[c, o, a]·G_N[a, e, b], one [n·r3, r1]×[r1, r2]
     * product (n·r1·r2·r3 multiply-adds).
     *
     * @param outRows the rows of G_O unfolded, [n, r3·r1]
     * @param expert  G_N[:, e, :] [r1, r2]
     */
    public static INDArray outRows(INDArray outRows, INDArray expert) {
        long n = outRows.size(0);
        long r1 = expert.size(0);
        long r2 = expert.size(1);
        long r3 = outRows.size(1) / r1;
        INDArray copy = outRows.dup('c');
        INDArray product = copy.reshape('c', n * r3, r1).mmul(expert);                         // [(o, c), b]
        INDArray rows = Nd4j.createUninitialized(product.dataType(), n, r2 * r3);              // [o, (b, c)]
        rows.reshape('c', n, r2, r3).assign(product.reshape('c', n, r3, r2).permute(0, 2, 1));  // its own buffer
        NativeBuffers.free(copy, product);         // now, not at a collection: ALS calls this per expert and block
        return rows;
    }

    /** Expert e's weight W_e [out, in], W_e[o, i] = trace(G_N[:, e, :]·G_I[:, i, :]·G_O[:, o, :]), materialised. */
    public INDArray weight(int e) {
        return outRows(e).mmul(inMatrix.transpose());                                       // [out, in]
    }
}
