package org.sparkmoe.kernels;

import jdk.incubator.vector.DoubleVector;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorSpecies;

/**
 * Element-wise row operations of the MoE combine and scatter, and the float32 ↔ float64 copies of
 * {@link NativeElements}, with the Vector API (the CPU's widest float64 lanes, as {@link Exp}). Each is the same IEEE operations
 * in the same order as its scalar loop (the {@code …Scalar} methods, the reference VectorRowsTest compares against),
 * so both give the same bits: lanes never combine (but in {@link #max}, which is exact, and {@link #sumExpShifted},
 * whose order is fixed by the element index), so the last partial vector may be done by the scalar loop. Each
 * public method runs its vector kernel (the {@code …Lanes} method) once {@link VectorWarmup} says the kernels are
 * compiled, and its scalar loop before.
 */
public final class VectorRows {
    private static final VectorSpecies<Double> DOUBLES = Exp.SPECIES;
    private static final VectorSpecies<Float> FLOATS = VectorSpecies.of(float.class,
            jdk.incubator.vector.VectorShape.forBitSize(DOUBLES.vectorBitSize() / 2));   // as many float lanes
    /** {@link #sumExpShifted}'s partial sums: four on every CPU, whatever its vector width, so the same bits. */
    private static final VectorSpecies<Double> SUMS = DoubleVector.SPECIES_256;

    private VectorRows() {
    }

    /** acc[at + i] = round(acc[at + i] + round(g · y[i])) for i &lt; n (rounded to float32 when {@code single}). */
    public static void addScaled(double[] acc, int at, double g, double[] y, int n, boolean single) {
        if (VectorWarmup.ready()) {
            addScaledLanes(acc, at, g, y, n, single);
        } else {
            addScaledScalar(acc, at, g, y, 0, n, single);
        }
    }

    static void addScaledLanes(double[] acc, int at, double g, double[] y, int n, boolean single) {
        int i = 0;
        for (int end = DOUBLES.loopBound(n); i < end; i += DOUBLES.length()) {
            DoubleVector p = round(DoubleVector.fromArray(DOUBLES, y, i).mul(g), single);
            round(DoubleVector.fromArray(DOUBLES, acc, at + i).add(p), single).intoArray(acc, at + i);
        }
        addScaledScalar(acc, at, g, y, i, n, single);
    }

    /** {@link #addScaled} for i in from..n-1, one element at a time: the reference. */
    static void addScaledScalar(double[] acc, int at, double g, double[] y, int from, int n, boolean single) {
        for (int i = from; i < n; i++) {
            acc[at + i] = Flat.round(acc[at + i] + Flat.round(g * y[i], single), single);
        }
    }

    /** out[i] = g · x[at + i] for i &lt; n. */
    public static void scale(double[] out, double g, double[] x, int at, int n) {
        if (VectorWarmup.ready()) {
            scaleLanes(out, g, x, at, n);
        } else {
            scaleScalar(out, g, x, at, 0, n);
        }
    }

    static void scaleLanes(double[] out, double g, double[] x, int at, int n) {
        int i = 0;
        for (int end = DOUBLES.loopBound(n); i < end; i += DOUBLES.length()) {
            DoubleVector.fromArray(DOUBLES, x, at + i).mul(g).intoArray(out, i);
        }
        scaleScalar(out, g, x, at, i, n);
    }

    static void scaleScalar(double[] out, double g, double[] x, int at, int from, int n) {
        for (int i = from; i < n; i++) {
            out[i] = g * x[at + i];
        }
    }

    /** acc[at + i] += x[i] for i &lt; n. */
    public static void add(double[] acc, int at, double[] x, int n) {
        if (VectorWarmup.ready()) {
            addLanes(acc, at, x, n);
        } else {
            addScalar(acc, at, x, 0, n);
        }
    }

    static void addLanes(double[] acc, int at, double[] x, int n) {
        int i = 0;
        for (int end = DOUBLES.loopBound(n); i < end; i += DOUBLES.length()) {
            DoubleVector.fromArray(DOUBLES, acc, at + i).add(DoubleVector.fromArray(DOUBLES, x, i))
                    .intoArray(acc, at + i);
        }
        addScalar(acc, at, x, i, n);
    }

    static void addScalar(double[] acc, int at, double[] x, int from, int n) {
        for (int i = from; i < n; i++) {
            acc[at + i] += x[i];
        }
    }

    /**
     * x[at + i] = round(e^round(round(x[at + i] · scale) − shift)) for i &lt; n, rounded to float32 when
     * {@code single}: attention's probabilities from its logits (scale 1 for logits already scaled), with
     * {@link Exp}'s e^x.
     */
    public static void expShifted(double[] x, int at, int n, double scale, double shift, boolean single) {
        if (VectorWarmup.ready()) {
            expShiftedLanes(x, at, n, scale, shift, single);
        } else {
            expShiftedScalar(x, at, 0, n, scale, shift, single);
        }
    }

    static void expShiftedLanes(double[] x, int at, int n, double scale, double shift, boolean single) {
        int i = 0;
        int end = DOUBLES.loopBound(n);
        if (single) {                                      // the argument, one loop per precision
            for (; i < end; i += DOUBLES.length()) {
                round(round(DoubleVector.fromArray(DOUBLES, x, at + i).mul(scale)).sub(shift)).intoArray(x, at + i);
            }
        } else {
            for (; i < end; i += DOUBLES.length()) {
                DoubleVector.fromArray(DOUBLES, x, at + i).mul(scale).sub(shift).intoArray(x, at + i);
            }
        }
        for (; i < n; i++) {
            x[at + i] = shifted(x[at + i], scale, shift, single);
        }
        Exp.expLanes(x, at, x, at, n, single);             // then e^x in its own pass (see there why)
    }

    /** {@link #expShifted} for i in from..n-1, one element at a time: the reference. */
    static void expShiftedScalar(double[] x, int at, int from, int n, double scale, double shift, boolean single) {
        for (int i = from; i < n; i++) {
            x[at + i] = Flat.round(Exp.exp(shifted(x[at + i], scale, shift, single)), single);
        }
    }

    /** e^x's argument in {@link #expShifted}: round(round(x · scale) − shift). */
    private static double shifted(double x, double scale, double shift, boolean single) {
        return Flat.round(Flat.round(x * scale, single) - shift, single);
    }

    /** out[i] = in[i] widened, for i &lt; n (exact). */
    public static void widen(float[] in, double[] out, int n) {
        if (VectorWarmup.ready()) {
            widenLanes(in, out, n);
        } else {
            widenScalar(in, out, 0, n);
        }
    }

    static void widenLanes(float[] in, double[] out, int n) {
        int i = 0;
        for (int end = FLOATS.loopBound(n); i < end; i += FLOATS.length()) {
            ((DoubleVector) FloatVector.fromArray(FLOATS, in, i).convertShape(VectorOperators.F2D, DOUBLES, 0))
                    .intoArray(out, i);
        }
        widenScalar(in, out, i, n);
    }

    static void widenScalar(float[] in, double[] out, int from, int n) {
        for (int i = from; i < n; i++) {
            out[i] = in[i];
        }
    }

    /** max of v[at .. at+n) as {@link Math#max} takes it (NaN wins, +0 over −0); −∞ for n = 0. */
    public static double max(float[] v, int at, int n) {
        return VectorWarmup.ready() ? maxLanes(v, at, n) : maxScalar(v, at, 0, n, Float.NEGATIVE_INFINITY);
    }

    static double maxLanes(float[] v, int at, int n) {
        int i = 0;
        FloatVector lanes = FloatVector.broadcast(FLOATS, Float.NEGATIVE_INFINITY);
        for (int end = FLOATS.loopBound(n); i < end; i += FLOATS.length()) {
            lanes = lanes.max(FloatVector.fromArray(FLOATS, v, at + i));
        }
        return maxScalar(v, at, i, n, lanes.reduceLanes(VectorOperators.MAX));
    }

    static double maxScalar(float[] v, int at, int from, int n, float max) {
        for (int i = from; i < n; i++) {
            max = Math.max(max, v[at + i]);
        }
        return max;
    }

    /** max of v[at .. at+n) as {@link Math#max} takes it (NaN wins, +0 over −0); −∞ for n = 0. */
    public static double max(double[] v, int at, int n) {
        return VectorWarmup.ready() ? maxLanes(v, at, n) : maxScalar(v, at, 0, n, Double.NEGATIVE_INFINITY);
    }

    static double maxLanes(double[] v, int at, int n) {
        int i = 0;
        DoubleVector lanes = DoubleVector.broadcast(DOUBLES, Double.NEGATIVE_INFINITY);
        for (int end = DOUBLES.loopBound(n); i < end; i += DOUBLES.length()) {
            lanes = lanes.max(DoubleVector.fromArray(DOUBLES, v, at + i));
        }
        return maxScalar(v, at, i, n, lanes.reduceLanes(VectorOperators.MAX));
    }

    static double maxScalar(double[] v, int at, int from, int n, double max) {
        for (int i = from; i < n; i++) {
            max = Math.max(max, v[at + i]);
        }
        return max;
    }

    /**
     * Σ e^(v[at + i] − shift) for i &lt; n in float64, e^x by {@link Exp}: term i goes into partial sum i mod 4 (one
     * per float64 lane; each adds its terms in order), and the four are added as ((s0 + s1) + s2) + s3, in the vector
     * lanes and in the scalar twin alike.
     *
     * @param scratch at least n values, overwritten with the terms
     */
    public static double sumExpShifted(float[] v, int at, int n, double shift, double[] scratch) {
        return VectorWarmup.ready() ? sumExpShiftedLanes(v, at, n, shift, scratch)
                : sumExpShiftedScalar(v, at, n, shift);
    }

    static double sumExpShiftedLanes(float[] v, int at, int n, double shift, double[] scratch) {
        int i = 0;
        for (int end = FLOATS.loopBound(n); i < end; i += FLOATS.length()) {
            ((DoubleVector) FloatVector.fromArray(FLOATS, v, at + i).convertShape(VectorOperators.F2D, DOUBLES, 0))
                    .sub(shift).intoArray(scratch, i);
        }
        for (; i < n; i++) {
            scratch[i] = v[at + i] - shift;
        }
        Exp.expLanes(scratch, 0, scratch, 0, n, false);
        DoubleVector lanes = DoubleVector.zero(SUMS);
        i = 0;
        for (int end = SUMS.loopBound(n); i < end; i += SUMS.length()) {
            lanes = lanes.add(DoubleVector.fromArray(SUMS, scratch, i));
        }
        double[] sums = new double[SUMS.length()];
        for (int k = 0; k < sums.length; k++) {
            sums[k] = lanes.lane(k);      // lane by lane: with lanes.toArray() or intoArray here, C2 (JDK 17) boxed
        }                                 // the loop's vector on every iteration, 14 KB of garbage per row of 1,024
        for (; i < n; i++) {
            sums[i % sums.length] += scratch[i];
        }
        return total(sums);
    }

    /** {@link #sumExpShifted} one term at a time: the reference. */
    static double sumExpShiftedScalar(float[] v, int at, int n, double shift) {
        double[] sums = new double[SUMS.length()];
        for (int i = 0; i < n; i++) {
            sums[i % sums.length] += Exp.exp(v[at + i] - shift);
        }
        return total(sums);
    }

    /** The partial sums added left to right. */
    private static double total(double[] sums) {
        double total = sums[0];
        for (int k = 1; k < sums.length; k++) {
            total += sums[k];
        }
        return total;
    }

    /** out[i] = (float) in[i] (round to nearest even), for i &lt; n. */
    public static void narrow(double[] in, float[] out, int n) {
        if (VectorWarmup.ready()) {
            narrowLanes(in, out, n);
        } else {
            narrowScalar(in, out, 0, n);
        }
    }

    static void narrowLanes(double[] in, float[] out, int n) {
        int i = 0;
        for (int end = DOUBLES.loopBound(n); i < end; i += DOUBLES.length()) {
            ((FloatVector) DoubleVector.fromArray(DOUBLES, in, i).convertShape(VectorOperators.D2F, FLOATS, 0))
                    .intoArray(out, i);
        }
        narrowScalar(in, out, i, n);
    }

    static void narrowScalar(double[] in, float[] out, int from, int n) {
        for (int i = from; i < n; i++) {
            out[i] = (float) in[i];
        }
    }

    /** v rounded to float32 lane by lane when {@code single} (a cast there and back: round to nearest even). */
    static DoubleVector round(DoubleVector v, boolean single) {
        return single ? round(v) : v;
    }

    /** Every lane rounded to float32. */
    static DoubleVector round(DoubleVector v) {
        return (DoubleVector) v.convertShape(VectorOperators.D2F, FLOATS, 0)
                .convertShape(VectorOperators.F2D, DOUBLES, 0);
    }
}
