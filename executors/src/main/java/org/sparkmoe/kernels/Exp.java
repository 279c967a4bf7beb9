package org.sparkmoe.kernels;

import jdk.incubator.vector.DoubleVector;
import jdk.incubator.vector.LongVector;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorSpecies;

/**
 * e^x in float64 from a fixed sequence of correctly rounded IEEE operations (+, ×, fused multiply-add, exact
 * power-of-two scaling), as a scalar and as a {@link DoubleVector} lane-wise twin that give the same bits for every
 * input, on every CPU, compiled or interpreted. The Vector API's own {@code EXP} is not used because its result is
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
    /** Four float64 lanes: native on AVX2 and AVX-512, and the same lane layout on both. */
    static final VectorSpecies<Double> SPECIES = DoubleVector.SPECIES_256;

    private static final double LOG2E = 1.4426950408889634;
    private static final double LN2_HI = 0.6931471803691238;      // 0x3fe62e42fee00000: n·LN2_HI is exact
    private static final double LN2_LO = 1.9082149292705877e-10;  // ln 2 − LN2_HI
    private static final double SHIFTER = 0x1.8p52;               // x + SHIFTER rounds x to an integer
    // Inputs are clamped to [LOWEST, HIGHEST]: above 709.78 e^x > Double.MAX_VALUE, below −745.14
    // e^x < Double.MIN_VALUE / 2, so the clamped ends still round to +∞ and 0 (p·2^⌊n/2⌋ is exact, the second
    // factor rounds once), and n stays within the two factors' exponent range. A clamp, not masked blends: see the
    // vector method.
    private static final double HIGHEST = 710.0;
    private static final double LOWEST = -746.0;
    /** 1/k! for k = 13 down to 2. */
    private static final double[] TAYLOR = {
        1.0 / 6227020800.0, 1.0 / 479001600.0, 1.0 / 39916800.0, 1.0 / 3628800.0, 1.0 / 362880.0, 1.0 / 40320.0,
        1.0 / 5040.0, 1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5};

    private Exp() {
    }

    /** e^x, the scalar twin of {@link #exp(DoubleVector)}. */
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

    /** e^x lane by lane, bit-identical to {@link #exp(double)} in every lane; x has {@link #SPECIES}' lanes. */
    public static DoubleVector exp(DoubleVector x) {
        DoubleVector xs = x.max(LOWEST).min(HIGHEST);
        DoubleVector shifted = xs.mul(LOG2E).add(SHIFTER);
        DoubleVector n = shifted.sub(SHIFTER);
        DoubleVector minusN = n.neg();
        VectorSpecies<Double> lanes = SPECIES;                     // a constant: what the JIT compiles to vectors
        DoubleVector r = minusN.fma(DoubleVector.broadcast(lanes, LN2_HI), xs);
        r = minusN.fma(DoubleVector.broadcast(lanes, LN2_LO), r);
        // Horner written out, not as a loop over TAYLOR: with the loop (and masked blends for the range), JDK 17's C2
        // left parts of the SwiGLU kernel on the Vector API's Java fallback (JFR: tOpTemplate, blendTemplate).
        DoubleVector p = r.fma(DoubleVector.broadcast(lanes, TAYLOR[0]), DoubleVector.broadcast(lanes, TAYLOR[1]));
        p = p.fma(r, DoubleVector.broadcast(lanes, TAYLOR[2]));
        p = p.fma(r, DoubleVector.broadcast(lanes, TAYLOR[3]));
        p = p.fma(r, DoubleVector.broadcast(lanes, TAYLOR[4]));
        p = p.fma(r, DoubleVector.broadcast(lanes, TAYLOR[5]));
        p = p.fma(r, DoubleVector.broadcast(lanes, TAYLOR[6]));
        p = p.fma(r, DoubleVector.broadcast(lanes, TAYLOR[7]));
        p = p.fma(r, DoubleVector.broadcast(lanes, TAYLOR[8]));
        p = p.fma(r, DoubleVector.broadcast(lanes, TAYLOR[9]));
        p = p.fma(r, DoubleVector.broadcast(lanes, TAYLOR[10]));
        p = p.fma(r, DoubleVector.broadcast(lanes, TAYLOR[11]));
        DoubleVector one = DoubleVector.broadcast(lanes, 1.0);
        p = p.fma(r, one);
        p = p.fma(r, one);
        LongVector bits = shifted.reinterpretAsLongs().sub(Double.doubleToRawLongBits(SHIFTER));
        LongVector half = bits.lanewise(VectorOperators.ASHR, 1);
        DoubleVector s1 = half.add(1023).lanewise(VectorOperators.LSHL, 52).reinterpretAsDoubles();
        DoubleVector s2 = bits.sub(half).add(1023).lanewise(VectorOperators.LSHL, 52).reinterpretAsDoubles();
        return p.mul(s1).mul(s2);
    }
}
