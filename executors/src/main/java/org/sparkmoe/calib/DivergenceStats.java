package org.sparkmoe.calib;

import java.util.Arrays;

/**
 * Mergeable statistics of a model against a baseline over scored tokens (llama.cpp's {@code perplexity
 * --kl-divergence} numbers): exact sums ({@link ExactSums}) of KL(P ‖ Q), of both NLLs, the same-top-1 count, and
 * every per-token KL (in an array that doubles as it fills), from which {@link #kldPercentile} takes exact percentiles. Keeping the values (8 bytes a scored
 * token, on the driver after the merge) rather than a sketch makes every percentile exact and independent of how
 * the tokens were split and merged: the sorted array is the same for any order. {@link #merge} concatenates; values
 * are sorted once, when a percentile is first asked for.
 */
public final class DivergenceStats implements java.io.Serializable {
    private static final int KLD = 0;
    private static final int NLL = 1;
    private static final int BASELINE_NLL = 2;
    /** The most per-token KLs one array holds (the JVM's array limit). */
    static final int MAX_TOKENS = Integer.MAX_VALUE - 8;

    private final ExactSums sums = new ExactSums(3);
    private long sameTop;
    private double[] klds = new double[0];  // per-token KL in [0, tokens), in arrival order until sorted; capacity grows ×2
    private int tokens;                    // ≤ maxTokens: checked in append
    private boolean sorted = true;
    private final int maxTokens;

    public DivergenceStats() {
        this(MAX_TOKENS);
    }

    /** With a smaller cap on the per-token KLs kept (tests). */
    DivergenceStats(int maxTokens) {
        this.maxTokens = maxTokens;
    }

    /** Adds scored tokens: per token its KL(P ‖ Q), −log Q and −log P of the true next token, same top-1. */
    public DivergenceStats add(double[] kld, double[] nll, double[] baselineNll, boolean[] same) {
        int n = kld.length;
        if (nll.length != n || baselineNll.length != n || same.length != n) {
            throw new IllegalArgumentException("per-token arrays differ in length: kld " + n + ", nll " + nll.length
                    + ", baseline nll " + baselineNll.length + ", same top " + same.length);
        }
        checkRoomFor(n);
        for (int i = 0; i < n; i++) {
            sums.add(KLD, kld[i]);
            sums.add(NLL, nll[i]);
            sums.add(BASELINE_NLL, baselineNll[i]);
            sameTop += same[i] ? 1 : 0;
        }
        append(kld);
        return this;
    }

    /** this += other (exact; the result does not depend on the order of merges). */
    public DivergenceStats merge(DivergenceStats other) {
        checkRoomFor(other.tokens);
        sums.merge(other.sums);
        sameTop += other.sameTop;
        append(Arrays.copyOf(other.klds, other.tokens));
        return this;
    }

    /** Refuses, before anything changes, to hold more than {@code maxTokens} per-token KLs. */
    private void checkRoomFor(int more) {
        if ((long) tokens + more > maxTokens) {
            throw new IllegalStateException("over " + maxTokens + " scored tokens against a baseline: every per-token KL "
                    + "is kept (8 bytes each) for exact percentiles; score fewer tokens (a smaller --data or --split)");
        }
    }

    private void append(double[] values) {
        if (values.length == 0) {
            return;
        }
        long needed = (long) tokens + values.length;
        if (needed > klds.length) {
            klds = Arrays.copyOf(klds, (int) Math.min(maxTokens, Math.max(needed, 2L * klds.length)));
        }
        System.arraycopy(values, 0, klds, tokens, values.length);
        tokens += values.length;
        sorted = false;
    }

    public long tokens() {
        return tokens;
    }

    public double kldSum() {
        return sums.get(KLD);
    }

    public double nllSum() {
        return sums.get(NLL);
    }

    public double baselineNllSum() {
        return sums.get(BASELINE_NLL);
    }

    public long sameTop() {
        return sameTop;
    }

    /**
     * The {@code fraction} percentile of the per-token KLs as llama.cpp takes it: sorted values v, p =
     * fraction·(n−1), (1 − frac(p))·v[⌊p⌋] + frac(p)·v[⌊p⌋+1]; the smallest at 0, the largest at 1.
     */
    public double kldPercentile(double fraction) {
        if (tokens == 0) {
            throw new IllegalStateException("no scored tokens: no KL percentile");
        }
        if (!sorted) {
            Arrays.sort(klds, 0, tokens);
            sorted = true;
        }
        if (fraction <= 0) {
            return klds[0];
        }
        if (fraction >= 1) {
            return klds[tokens - 1];
        }
        double p = fraction * (tokens - 1);
        int ip = (int) p;
        double frac = p - ip;
        return (1 - frac) * klds[ip] + frac * klds[Math.min(ip + 1, tokens - 1)];
    }
}
