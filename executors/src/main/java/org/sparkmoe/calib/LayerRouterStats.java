package org.sparkmoe.calib;

import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.kernels.Softmax;

import java.util.Arrays;

/**
 * Router statistics of one MoE layer, as an exact mergeable accumulator ({@link #add} per batch of tokens,
 * {@link #merge} across partitions, like Spark MLlib's aggregators). Every sum is exact ({@link ExactSums}),
 * so the result does not depend on how the tokens were split or in which order the parts were merged.
 *
 * <p>Per token t with logits z [E], probabilities p = softmax(z) (float32, as the router computes them) and
 * the selected top-K set S(t) (ties to the lower index, as {@link org.sparkmoe.routing.Router}):
 * <ul>
 * <li>{@code count[e]}: tokens with e ∈ S(t);</li>
 * <li>{@code probSum[e]} = Σ_t p_e, {@code logitSum[e]} = Σ_t z_e;</li>
 * <li>{@code coselect[i][j]}: tokens with both i and j ∈ S(t) (so the diagonal is {@code count});</li>
 * <li>{@code entropySum} = Σ_t −Σ_e p_e ln p_e (nats);</li>
 * <li>{@code topmSqSum[m-1]} = Σ_t Σ_{i≤m} ĝ_i² for m = 1..E, where ĝ are the m largest p renormalised to sum
 *     to 1 (what rescaling needs when top-k changes);</li>
 * <li>{@code tokens}.</li>
 * </ul>
 */
public final class LayerRouterStats implements java.io.Serializable {
    private final int experts;
    private final int topK;
    private final long[] count;        // [E]
    private final ExactSums probSum;   // [E]
    private final ExactSums logitSum;  // [E]
    private final long[] coselect;     // [E, E] row-major
    private final ExactSums entropySum; // [1]
    private final ExactSums topmSqSum; // [E], index m-1
    private long tokens;

    public LayerRouterStats(int experts, int topK) {
        if (topK < 1 || topK > experts) {
            throw new IllegalArgumentException("top-k must be in [1, " + experts + "], got " + topK);
        }
        this.experts = experts;
        this.topK = topK;
        this.count = new long[experts];
        this.probSum = new ExactSums(experts);
        this.logitSum = new ExactSums(experts);
        this.coselect = new long[experts * experts];
        this.entropySum = new ExactSums(1);
        this.topmSqSum = new ExactSums(experts);
    }

    /**
     * Adds T tokens.
     *
     * @param logits   router logits [T, E]
     * @param selected the top-K experts of each token, row-major [T, K] (as {@code Routing.experts()})
     */
    public void add(INDArray logits, int[] selected) {
        if (logits.rank() != 2 || logits.size(1) != experts || selected.length != logits.size(0) * topK) {
            throw new IllegalArgumentException("expected logits [T, " + experts + "] and " + topK
                    + " selections per token, got " + Arrays.toString(logits.shape()) + " and " + selected.length);
        }
        int t = (int) logits.size(0);
        float[] z = logits.dup('c').data().asFloat();
        float[] p = new float[experts];
        double[] sorted = new double[experts];
        for (int token = 0; token < t; token++) {
            int at = token * experts;
            Softmax.row(z, at, experts, p, 0);
            double entropy = 0;
            for (int e = 0; e < experts; e++) {
                probSum.add(e, p[e]);
                logitSum.add(e, z[at + e]);
                if (p[e] > 0) {
                    entropy -= (double) p[e] * Math.log(p[e]);
                }
                sorted[e] = p[e];
            }
            entropySum.add(0, entropy);
            addTopM(sorted);
            for (int j = 0; j < topK; j++) {
                int a = selected[token * topK + j];
                count[a]++;
                for (int i = 0; i < topK; i++) {
                    coselect[a * experts + selected[token * topK + i]]++;
                }
            }
            tokens++;
        }
    }

    /** topmSqSum[m-1] += Σ_{i≤m} p_(i)² / (Σ_{i≤m} p_(i))², p_(i) in descending order. */
    private void addTopM(double[] probs) {
        Arrays.sort(probs);
        double sum = 0;
        double sumSq = 0;
        for (int m = 1; m <= experts; m++) {
            double g = probs[experts - m];
            sum += g;
            sumSq += g * g;
            topmSqSum.add(m - 1, sumSq / (sum * sum));
        }
    }

    /** this += other (exact). */
    public LayerRouterStats merge(LayerRouterStats other) {
        if (other.experts != experts || other.topK != topK) {
            throw new IllegalArgumentException("merging statistics of " + other.experts + " experts, top-" + other.topK
                    + " into " + experts + " experts, top-" + topK);
        }
        for (int e = 0; e < experts; e++) {
            count[e] += other.count[e];
        }
        for (int i = 0; i < coselect.length; i++) {
            coselect[i] += other.coselect[i];
        }
        probSum.merge(other.probSum);
        logitSum.merge(other.logitSum);
        entropySum.merge(other.entropySum);
        topmSqSum.merge(other.topmSqSum);
        tokens += other.tokens;
        return this;
    }

    public int experts() {
        return experts;
    }

    public int topK() {
        return topK;
    }

    public long tokens() {
        return tokens;
    }

    public long[] count() {
        return count.clone();
    }

    public double[] probSum() {
        return probSum.toArray();
    }

    public double[] logitSum() {
        return logitSum.toArray();
    }

    /** [E][E]; the diagonal equals {@link #count()}. */
    public long[][] coselect() {
        long[][] out = new long[experts][];
        for (int i = 0; i < experts; i++) {
            out[i] = Arrays.copyOfRange(coselect, i * experts, (i + 1) * experts);
        }
        return out;
    }

    public double entropySum() {
        return entropySum.get(0);
    }

    /** [E]: entry m-1 is the sum for top-m. */
    public double[] topmSqSum() {
        return topmSqSum.toArray();
    }

    /** Selection rate of each expert: count / tokens (each token selects K experts, so rates sum to K). */
    public double[] selectionRate() {
        double[] rate = new double[experts];
        for (int e = 0; e < experts; e++) {
            rate[e] = tokens == 0 ? 0 : (double) count[e] / tokens;
        }
        return rate;
    }

    /** Load imbalance: the busiest expert's count over the mean count (1 = perfectly balanced). */
    public double maxOverMeanLoad() {
        long max = Arrays.stream(count).max().orElse(0);
        double mean = Arrays.stream(count).sum() / (double) experts;
        return mean == 0 ? 0 : max / mean;
    }

    /** Whether both hold exactly the same statistics, bit for bit. */
    public boolean sameAs(LayerRouterStats other) {
        return experts == other.experts && topK == other.topK && tokens == other.tokens
                && Arrays.equals(count, other.count) && Arrays.equals(coselect, other.coselect)
                && probSum.sameAs(other.probSum) && logitSum.sameAs(other.logitSum)
                && entropySum.sameAs(other.entropySum) && topmSqSum.sameAs(other.topmSqSum);
    }
}
