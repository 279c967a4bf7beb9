package org.sparkmoe.mumoe;

import java.util.Arrays;

/**
 * entmax-1.5 over a row (Peters, Niculae &amp; Martins, "Sparse Sequence-to-Sequence Models", ACL 2019):
 * p = [z/2 − τ]₊², τ the one threshold with Σ p = 1. Unlike softmax it gives exactly zero to every entry whose z/2 is
 * at or below τ, so the weights are sparse and still convex (non-negative, summing to 1). In float64 throughout.
 */
final class Entmax15 {
    private Entmax15() {
    }

    /**
     * v[at .. at+n) ← entmax15(v[at .. at+n)) in place, by the exact sort-based threshold: with u = z/2 − max(z/2)
     * sorted descending, for each k the threshold over the top k is τ_k = mean_k − √max(0, (1 − k·var_k)/k)
     * (the root of Σ_{j≤k} (u_j − τ)² = 1), and the support is the largest k with τ_k ≤ u_k.
     */
    static void row(double[] v, int at, int n) {
        double max = Double.NEGATIVE_INFINITY;
        for (int i = 0; i < n; i++) {
            max = Math.max(max, v[at + i]);
        }
        double[] u = new double[n];                                    // [n] z/2 − max(z/2)
        for (int i = 0; i < n; i++) {
            u[i] = (v[at + i] - max) / 2;
        }
        double[] sorted = u.clone();
        Arrays.sort(sorted);                                           // ascending; read from the end
        double sum = 0;
        double sumSq = 0;
        double tau = 0;
        for (int k = 1; k <= n; k++) {
            double uk = sorted[n - k];
            sum += uk;
            sumSq += uk * uk;
            double mean = sum / k;
            double delta = (1 - k * (sumSq / k - mean * mean)) / k;
            double tauK = mean - Math.sqrt(Math.max(0, delta));
            if (tauK > uk) {
                break;                                                 // τ_k ≤ u_k fails from here on
            }
            tau = tauK;
        }
        for (int i = 0; i < n; i++) {
            double s = Math.max(0, u[i] - tau);
            v[at + i] = s * s;
        }
    }

    /**
     * The mirror of {@link #row}: given p = entmax15(z) and dp, writes dz into {@code dp[at .. at+n)}. On the
     * support p = (z/2 − τ)² with Σ p = 1, so with s = √p (0 off the support) dτ = Σ s·dz / (2·Σ s) and
     * dp = s ⊙ dz − s·(Σ s·dz)/Σ s: the Jacobian is diag(s) − s·sᵀ/Σ s, symmetric, and
     * dz = s ⊙ (dp − Σ s·dp / Σ s).
     */
    static void rowBackward(double[] p, double[] dp, int at, int n) {
        double sumS = 0;
        double sumSdp = 0;
        for (int i = 0; i < n; i++) {
            double s = Math.sqrt(p[at + i]);
            sumS += s;
            sumSdp += s * dp[at + i];
        }
        double shift = sumSdp / sumS;
        for (int i = 0; i < n; i++) {
            dp[at + i] = Math.sqrt(p[at + i]) * (dp[at + i] - shift);
        }
    }
}
