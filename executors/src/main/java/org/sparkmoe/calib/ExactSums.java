package org.sparkmoe.calib;

/**
 * N running sums that are exact and therefore independent of the order of additions and merges: every term
 * (a double) is converted once to a signed 128-bit fixed-point number with 64 fractional bits, and the sums are
 * integer sums of those. A term loses only its bits below 2⁻⁶⁴ (every float32 of magnitude ≥ 2⁻⁴¹ converts
 * exactly), so splitting the data into any partitions and merging them in any order gives the same bits.
 * Terms must be finite with magnitude below 2⁶²; a sum may reach 2⁶³ before it overflows.
 */
public final class ExactSums implements java.io.Serializable {
    private static final double TWO_POW_64 = 0x1p64;
    private static final double LIMIT = 0x1p62;
    private final long[] hi; // [N] integer parts (two's complement high words)
    private final long[] lo; // [N] fractional parts (unsigned low words)

    public ExactSums(int n) {
        this.hi = new long[n];
        this.lo = new long[n];
    }

    public int size() {
        return hi.length;
    }

    /** sums[i] += term. */
    public void add(int i, double term) {
        if (term == 0.0) {
            return;
        }
        if (!(Math.abs(term) < LIMIT)) {
            throw new IllegalArgumentException("cannot sum " + term + ": terms must be finite with magnitude below 2^62");
        }
        long bits = Double.doubleToRawLongBits(term);
        int biased = (int) ((bits >>> 52) & 0x7ff);
        long mantissa = bits & 0xfffffffffffffL;
        int exponent; // term = ±mantissa · 2^exponent
        if (biased == 0) {
            exponent = -1074;
        } else {
            mantissa |= 1L << 52;
            exponent = biased - 1075;
        }
        int shift = exponent + 64; // fixed point value = mantissa · 2^shift, as 128 bits
        long addHi;
        long addLo;
        if (shift >= 64) {
            addHi = mantissa << (shift - 64);
            addLo = 0;
        } else if (shift > 0) {
            addHi = mantissa >>> (64 - shift);
            addLo = mantissa << shift;
        } else if (shift > -64) {
            addHi = 0;
            addLo = mantissa >>> -shift;
        } else {
            return; // below 2^-64: nothing survives
        }
        if (term < 0) {
            addLo = ~addLo + 1;
            addHi = ~addHi + (addLo == 0 ? 1 : 0);
        }
        addRaw(i, addHi, addLo);
    }

    private void addRaw(int i, long addHi, long addLo) {
        long sum = lo[i] + addLo;
        long carry = Long.compareUnsigned(sum, lo[i]) < 0 ? 1 : 0;
        lo[i] = sum;
        hi[i] += addHi + carry;
    }

    /** this += other, element by element (exact). */
    public void merge(ExactSums other) {
        if (other.size() != size()) {
            throw new IllegalArgumentException("merging " + other.size() + " sums into " + size());
        }
        for (int i = 0; i < hi.length; i++) {
            addRaw(i, other.hi[i], other.lo[i]);
        }
    }

    /** The sum, rounded to the nearest double (the exact value is hi + lo·2⁻⁶⁴). */
    public double get(int i) {
        double low = (lo[i] >>> 11) * 0x1p-53 + (lo[i] & 0x7ffL) * 0x1p-64;
        return hi[i] + low;
    }

    public double[] toArray() {
        double[] out = new double[size()];
        for (int i = 0; i < out.length; i++) {
            out[i] = get(i);
        }
        return out;
    }

    /** Whether both hold exactly the same sums. */
    public boolean sameAs(ExactSums other) {
        return java.util.Arrays.equals(hi, other.hi) && java.util.Arrays.equals(lo, other.lo);
    }
}
