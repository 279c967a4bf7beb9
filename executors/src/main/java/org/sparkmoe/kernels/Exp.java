package org.sparkmoe.kernels;

import jdk.incubator.vector.DoubleVector;
import jdk.incubator.vector.LongVector;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorSpecies;

/**
 * e^x in float64 from a fixed sequence of correctly rounded IEEE operations (+, ×, fused multiply-add, exact
 * power-of-two scaling), as a scalar and as a pass over arrays in {@link DoubleVector} lanes that give the same bits
 * for every input, on every CPU, compiled or interpreted. The Vector API's own {@code EXP} is not used because its result is
 * the JIT's choice (Intel SVML when compiled, {@link Math#exp} when not), which would let the same input round
 * differently before and after warm-up.
 *
 * <p>Method: n = round(x·log2 e) (ties to even), r = x − n·ln 2 in two parts (Cody–Waite), e^r by its Taylor series
 * to degree 13 (Horner with fused multiply-adds; the first dropped term is below 0.02 ulp for |r| ≤ ln2/2), times
 * 2^n applied as two exact power-of-two factors so that results down to the subnormals are reached. Against
 * {@link Math#exp}: within 1 ulp, equal on 94% of inputs (ExpTest). Overflow above 709.78 gives +∞, underflow below −745.14
 * gives 0, NaN stays NaN.
 */
public final class Exp {
    /**
     * The CPU's widest float64 vector, at least four lanes (eight with AVX-512). Lanes never combine in this class, so
     * every width gives the same bits; callers that sum across lanes fix their own layout.
     */
    static final VectorSpecies<Double> SPECIES = DoubleVector.SPECIES_PREFERRED.vectorBitSize() > 256
            ? DoubleVector.SPECIES_PREFERRED : DoubleVector.SPECIES_256;

    private static final double LOG2E = 1.4426950408889634;
    private static final double LN2_HI = 0.6931471803691238;      // 0x3fe62e42fee00000: n·LN2_HI is exact
    private static final double LN2_LO = 1.9082149292705877e-10;  // ln 2 − LN2_HI
    private static final double SHIFTER = 0x1.8p52;               // x + SHIFTER rounds x to an integer
    // Inputs are clamped to [LOWEST, HIGHEST]: above 709.78 e^x > Double.MAX_VALUE, below −745.14
    // e^x < Double.MIN_VALUE / 2, so the clamped ends still round to +∞ and 0 (p·2^⌊n/2⌋ is exact, the second
    // factor rounds once), and n stays within the two factors' exponent range.
    private static final double HIGHEST = 710.0;
    private static final double LOWEST = -746.0;
    // |x| ≤ LANES_RANGE keeps n within [−1021, 1021], where 2^n is one normal double and p·2^n (p in [0.70, 1.42])
    // a normal result: one exact scaling, the bits of the scalar's two factors. The vector lanes take that range.
    private static final double LANES_RANGE = 708.0;
    /** 1/k! for k = 13 down to 2. */
    private static final double[] TAYLOR = {
        1.0 / 6227020800.0, 1.0 / 479001600.0, 1.0 / 39916800.0, 1.0 / 3628800.0, 1.0 / 362880.0, 1.0 / 40320.0,
        1.0 / 5040.0, 1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5};
    // TAYLOR, 1 and the two parts of ln 2 in every lane, for expLanes: one static final field each, which C2 takes
    // as constants (the elements of an array of vectors it loads and type-checks in the loop, measured slower)
    private static final DoubleVector T13_LANES = DoubleVector.broadcast(SPECIES, TAYLOR[0]);
    private static final DoubleVector T12_LANES = DoubleVector.broadcast(SPECIES, TAYLOR[1]);
    private static final DoubleVector T11_LANES = DoubleVector.broadcast(SPECIES, TAYLOR[2]);
    private static final DoubleVector T10_LANES = DoubleVector.broadcast(SPECIES, TAYLOR[3]);
    private static final DoubleVector T9_LANES = DoubleVector.broadcast(SPECIES, TAYLOR[4]);
    private static final DoubleVector T8_LANES = DoubleVector.broadcast(SPECIES, TAYLOR[5]);
    private static final DoubleVector T7_LANES = DoubleVector.broadcast(SPECIES, TAYLOR[6]);
    private static final DoubleVector T6_LANES = DoubleVector.broadcast(SPECIES, TAYLOR[7]);
    private static final DoubleVector T5_LANES = DoubleVector.broadcast(SPECIES, TAYLOR[8]);
    private static final DoubleVector T4_LANES = DoubleVector.broadcast(SPECIES, TAYLOR[9]);
    private static final DoubleVector T3_LANES = DoubleVector.broadcast(SPECIES, TAYLOR[10]);
    private static final DoubleVector T2_LANES = DoubleVector.broadcast(SPECIES, TAYLOR[11]);
    private static final DoubleVector ONE_LANES = DoubleVector.broadcast(SPECIES, 1.0);
    private static final DoubleVector LN2_HI_LANES = DoubleVector.broadcast(SPECIES, LN2_HI);
    private static final DoubleVector LN2_LO_LANES = DoubleVector.broadcast(SPECIES, LN2_LO);

    private Exp() {
    }

    /** e^x, the scalar twin of {@link #expLanes}' lanes. */
    public static double exp(double x) {
        x = Math.min(Math.max(x, LOWEST), HIGHEST);               // NaN stays NaN
        double shifted = x * LOG2E + SHIFTER;                      // n in the low bits
        double n = shifted - SHIFTER;
        double r = Math.fma(-n, LN2_HI, x);
        r = Math.fma(-n, LN2_LO, r);
        double p = TAYLOR[0];
        for (int k = 1; k < TAYLOR.length; k++) {
            p = Math.fma(p, r, TAYLOR[k]);
        }
        p = Math.fma(p, r, 1.0);
        p = Math.fma(p, r, 1.0);                                   // e^r
        long bits = Double.doubleToRawLongBits(shifted) - Double.doubleToRawLongBits(SHIFTER);   // n
        long half = bits >> 1;
        double s1 = Double.longBitsToDouble((half + 1023) << 52);                  // 2^⌊n/2⌋
        double s2 = Double.longBitsToDouble((bits - half + 1023) << 52);           // 2^(n − ⌊n/2⌋)
        return p * s1 * s2;
    }

    /**
     * dst[dstAt + i] = e^src[srcAt + i] for i &lt; n, rounded to float32 when {@code single}: {@link #exp(double)}
     * on {@link #SPECIES}' lanes (the last n mod lanes elements, and any vector with an argument beyond ±708 or NaN, by
     * the scalar), the same bits for every element, on every CPU, compiled or interpreted. src and dst may be the
     * same array at the same offset. The vector kernels take e^x through this pass over their arrays, after a pass
     * that computes the argument.
     * <p>
     * Why the vector e^x is one method over arrays, written out in full: JDK 17's C2 stops inlining into a compilation
     * unit once it has created 18,000 nodes (NodeCountInliningCutoff), and every Vector API call creates dozens while
     * it is parsed. A kernel that computed the argument, e^x and the roundings in one loop ran past it; the calls it
     * then left out of line took and returned boxed vectors, an allocation per vector (docs/benchmarks.md, "e^x in a
     * pass of its own"). This method is over C2's 325-bytecode limit for inlining a hot method (FreqInlineSize), so
     * it is always compiled on its own, with the whole budget; only arrays cross its boundary. Horner is written
     * out, not as a loop over TAYLOR: with the loop (and masked blends for the range), C2 left parts of the SwiGLU
     * kernel on the Vector API's Java fallback (JFR: tOpTemplate, blendTemplate). The range is one test of every
     * lane, not a clamp: float64 max and min, which must order NaN and ±0, took a third of the pass.
     */
    static void expLanes(double[] src, int srcAt, double[] dst, int dstAt, int n, boolean single) {
        int i = 0;
        for (int end = SPECIES.loopBound(n); i < end; i += SPECIES.length()) {
            DoubleVector xs = DoubleVector.fromArray(SPECIES, src, srcAt + i);
            if (!xs.abs().compare(VectorOperators.LE, LANES_RANGE).allTrue()) {   // a lane out of range, or NaN
                expScalar(src, srcAt + i, dst, dstAt + i, SPECIES.length(), single);
                continue;
            }
            DoubleVector shifted = xs.mul(LOG2E).add(SHIFTER);
            DoubleVector minusN = shifted.sub(SHIFTER).neg();
            DoubleVector r = minusN.fma(LN2_HI_LANES, xs);
            r = minusN.fma(LN2_LO_LANES, r);
            DoubleVector p = r.fma(T13_LANES, T12_LANES);
            p = p.fma(r, T11_LANES);
            p = p.fma(r, T10_LANES);
            p = p.fma(r, T9_LANES);
            p = p.fma(r, T8_LANES);
            p = p.fma(r, T7_LANES);
            p = p.fma(r, T6_LANES);
            p = p.fma(r, T5_LANES);
            p = p.fma(r, T4_LANES);
            p = p.fma(r, T3_LANES);
            p = p.fma(r, T2_LANES);
            p = p.fma(r, ONE_LANES);
            p = p.fma(r, ONE_LANES);                               // e^r
            LongVector n2 = shifted.reinterpretAsLongs().sub(Double.doubleToRawLongBits(SHIFTER) - 1023);   // n + 1023
            DoubleVector e = p.mul(n2.lanewise(VectorOperators.LSHL, 52).reinterpretAsDoubles());          // p·2^n
            if (single) {                                          // a store per branch: no vector merges two paths
                VectorRows.round(e).intoArray(dst, dstAt + i);
            } else {
                e.intoArray(dst, dstAt + i);
            }
        }
        expScalar(src, srcAt + i, dst, dstAt + i, n - i, single);
    }

    /** {@link #expLanes} one element at a time: the reference. */
    static void expScalar(double[] src, int srcAt, double[] dst, int dstAt, int n, boolean single) {
        for (int i = 0; i < n; i++) {
            dst[dstAt + i] = Flat.round(exp(src[srcAt + i]), single);
        }
    }
}
