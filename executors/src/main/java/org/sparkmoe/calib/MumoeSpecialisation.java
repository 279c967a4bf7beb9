package org.sparkmoe.calib;

import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.stream.IntStream;

/**
 * How a μMoE term's experts specialise on the input files, from the gate mass of {@link MumoeGateStats} at one site.
 * Expert choice X is the soft assignment the gates give a token (P(X = n | token) = aₙ(x)), file F the token's file,
 * weighted by its tokens:
 * <pre>
 *   p(f)     = T_f / Σ_g T_g                                     // [F]  files' share of the tokens
 *   p(n | f) = m[f, n] / Σ_k m[f, k]     m[f, n] = Σ_{t ∈ f} aₙ(x_t)   // [F, N] the file's gate mass, normalised
 *   p(n)     = Σ_f p(f)·p(n | f)                                 // [N]
 *   I(F; X)  = Σ_f p(f) Σ_n p(n | f)·ln(p(n | f) / p(n))          // nats, 0 ≤ I ≤ min(ln F, ln N)
 * </pre>
 * An expert's specificity to file f is its term of that sum, s[f, n] = p(f)·p(n | f)·ln(p(n | f) / p(n)): large when
 * the file gives it much of its mass and the other files little. Concentration of a file's mass: its entropy
 * H_f = −Σ_n p(n | f)·ln p(n | f), the effective expert count exp(H_f) (N for uniform gates, 1 for one expert) and
 * the share of the mass its {@code top} heaviest experts hold.
 *
 * @param mutualInformation I(F; X) in nats
 * @param files             one view per file, in file order
 */
public record MumoeSpecialisation(double mutualInformation, List<FileView> files) {
    /**
     * @param tokens           T_f
     * @param share            p(· | f) [N]
     * @param entropy          H_f, nats
     * @param effectiveExperts exp(H_f)
     * @param topShare         Σ of the {@code top} largest p(n | f)
     * @param specific         the experts with the largest positive s[f, n], at most {@code top}, most specific first
     * @param specificity      s[f, n] of those experts, in the same order
     */
    public record FileView(long tokens, double[] share, double entropy, double effectiveExperts, double topShare,
                           int[] specific, double[] specificity) {
    }

    /**
     * @param mass   m [F][N]: each file's gate mass per expert
     * @param tokens T [F]: each file's tokens; a file with none gets a view of zeros and no weight
     * @param top    how many experts to list and to sum for {@link FileView#topShare} (≥ 1)
     */
    public static MumoeSpecialisation of(double[][] mass, long[] tokens, int top) {
        if (top < 1 || mass.length != tokens.length || mass.length == 0) {
            throw new IllegalArgumentException("μMoE specialisation needs one mass row per file and top ≥ 1, got "
                    + mass.length + " rows, " + tokens.length + " token counts, top " + top);
        }
        int files = mass.length;
        int n = mass[0].length;
        long total = 0;
        for (long t : tokens) {
            total += t;
        }
        double[][] share = new double[files][n];                       // p(n | f)
        double[] pf = new double[files];                               // p(f)
        double[] pn = new double[n];                                   // p(n)
        for (int f = 0; f < files; f++) {
            double sum = 0;
            for (double v : mass[f]) {
                sum += v;
            }
            pf[f] = total == 0 ? 0 : (double) tokens[f] / total;
            for (int e = 0; e < n && sum > 0; e++) {
                share[f][e] = mass[f][e] / sum;
                pn[e] += pf[f] * share[f][e];
            }
        }
        double mi = 0;
        List<FileView> views = new ArrayList<>();
        for (int f = 0; f < files; f++) {
            double[] s = new double[n];                                // s[f, ·]
            double entropy = 0;
            for (int e = 0; e < n; e++) {
                double p = share[f][e];
                if (p > 0) {
                    s[e] = pf[f] * p * Math.log(p / pn[e]);
                    entropy -= p * Math.log(p);
                    mi += s[e];
                }
            }
            double[] row = share[f];
            double topShare = IntStream.range(0, n).boxed().sorted(Comparator.comparingDouble(e -> -row[e])).limit(top)
                    .mapToDouble(e -> row[e]).sum();
            int[] specific = IntStream.range(0, n).filter(e -> s[e] > 0).boxed()
                    .sorted(Comparator.<Integer>comparingDouble(e -> -s[e]).thenComparingInt(e -> e)).limit(top)
                    .mapToInt(Integer::intValue).toArray();
            double[] specificity = IntStream.of(specific).mapToDouble(e -> s[e]).toArray();
            views.add(new FileView(tokens[f], row, entropy, Math.exp(entropy), topShare, specific, specificity));
        }
        return new MumoeSpecialisation(mi, List.copyOf(views));
    }
}
