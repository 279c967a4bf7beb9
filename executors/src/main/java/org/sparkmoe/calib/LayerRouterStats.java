package org.sparkmoe.calib;

import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.routing.Router;

import java.util.Arrays;

/**
 * Router statistics of one MoE layer, as an exact mergeable accumulator ({@link #add} per batch of tokens,
 * {@link #merge} across partitions, like Spark MLlib's aggregators). Every sum is exact ({@link ExactSums}),
 * so the result does not depend on how the tokens were split or in which order the parts were merged.
 *
 * <p>Per token t with logits z [E], scores p (softmax(z), or sigmoid(z) for GLM-4.5's routers; float32, as the router
 * computes them, see {@link Router#rank}) and the selected top-K set S(t) (the router's choice: by the corrected
 * scores within the kept groups, ties to the lower index):
 * <ul>
 * <li>{@code count[e]}: tokens with e ∈ S(t);</li>
 * <li>{@code probSum[e]} = Σ_t p_e, {@code logitSum[e]} = Σ_t z_e;</li>
 * <li>{@code coselect[i][j]}: tokens with both i and j ∈ S(t) (so the diagonal is {@code count});</li>
 * <li>{@code entropySum} = Σ_t −Σ_e q_e ln q_e (nats), q = p / Σ p (= p for softmax);</li>
 * <li>{@code topmSqSum[m-1]} = Σ_t Σ_{i≤m} ĝ_i² for m = 1..E, where ĝ are the scores of the first m experts in the
 *     router's order (what it would choose at top-m) renormalised to sum to 1 (what rescaling needs when top-k
 *     changes); with group-limited selection only m up to the kept groups' experts, the rest stays 0;</li>
 * <li>{@code tokens}.</li>
 * </ul>
 * Routers with a selection-only correction bias also record the score distribution before and after the bias
 * ({@code scoreHistogram}, {@code correctedHistogram}: every (token, expert) score in {@link #BINS} bins of width
 * {@link #BIN_WIDTH} from {@link #BIN_FROM}, the outer bins open-ended), the tokens whose selection the bias changes
 * ({@code biasChangedTokens}) and the experts it brings in ({@code biasChangedSelections}: Σ_t |S(t) \ S₀(t)|, S₀
 * the choice without the bias); group-limited routers record {@code groupKept[g]}, the tokens that kept group g.
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
    private final boolean normalised;  // scores that do not sum to 1 (sigmoid): entropy of p / Σ p
    private final long[] groupKept;    // [G], empty without groups
    private final long[] scoreHistogram;     // [BINS], empty without a correction bias
    private final long[] correctedHistogram; // [BINS], empty without a correction bias
    private long biasChangedTokens;
    private long biasChangedSelections;
    private long tokens;

    /** Histogram bins of the scores before and after the correction bias: [−1, 2) in steps of 0.1. */
    public static final int BINS = 30;
    public static final double BIN_FROM = -1.0;
    public static final double BIN_WIDTH = 0.1;

    /** A softmax router's statistics. */
    public LayerRouterStats(int experts, int topK) {
        this(experts, topK, false, 1, false);
    }

    /**
     * @param sigmoid whether the scores are sigmoids (entropy over the normalised scores)
     * @param groups  n_group of a group-limited router, else 1
     * @param biased  whether the router has a selection-only correction bias
     */
    public LayerRouterStats(int experts, int topK, boolean sigmoid, int groups, boolean biased) {
        if (topK < 1 || topK > experts) {
            throw new IllegalArgumentException("top-k must be in [1, " + experts + "], got " + topK);
        }
        this.experts = experts;
        this.topK = topK;
        this.normalised = sigmoid;
        this.groupKept = new long[groups > 1 ? groups : 0];
        this.scoreHistogram = new long[biased ? BINS : 0];
        this.correctedHistogram = new long[biased ? BINS : 0];
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
     * @param rankings each token's routing as the router sees it ({@link Router#rank} with this top-K)
     */
    public void add(INDArray logits, Router.Ranking[] rankings) {
        if (logits.rank() != 2 || logits.size(1) != experts || rankings.length != logits.size(0)) {
            throw new IllegalArgumentException("expected logits [T, " + experts + "] and one ranking per token, got "
                    + Arrays.toString(logits.shape()) + " and " + rankings.length);
        }
        float[] z = logits.dup('c').data().asFloat();
        for (int token = 0; token < rankings.length; token++) {
            Router.Ranking r = rankings[token];
            double[] p = r.scores();
            if ((r.unbiased() != null) != (scoreHistogram.length > 0)
                    || (r.keptGroups() == null ? 0 : groupKept.length) != groupKept.length || r.order().length < topK) {
                throw new IllegalArgumentException("a ranking of token " + token + " does not fit statistics of "
                        + experts + " experts, top-" + topK + ", " + Math.max(1, groupKept.length) + " groups, "
                        + (scoreHistogram.length > 0 ? "with" : "without") + " a correction bias");
            }
            int at = token * experts;
            double total = 0;
            for (int e = 0; e < experts; e++) {
                total += p[e];
            }
            double entropy = 0;
            for (int e = 0; e < experts; e++) {
                probSum.add(e, p[e]);
                logitSum.add(e, z[at + e]);
                double q = normalised ? p[e] / total : p[e];
                if (q > 0) {
                    entropy -= q * Math.log(q);
                }
            }
            entropySum.add(0, entropy);
            addTopM(p, r.order());
            int[] order = r.order();
            for (int j = 0; j < topK; j++) {
                int a = order[j];
                count[a]++;
                for (int i = 0; i < topK; i++) {
                    coselect[a * experts + order[i]]++;
                }
            }
            if (r.keptGroups() != null) {
                for (int g : r.keptGroups()) {
                    groupKept[g]++;
                }
            }
            if (r.unbiased() != null) {
                addBiasEffect(r);
            }
            tokens++;
        }
    }

    /** The histograms before and after the bias, and what the bias changes in this token's top-K. */
    private void addBiasEffect(Router.Ranking r) {
        for (int e = 0; e < experts; e++) {
            scoreHistogram[bin(r.scores()[e])]++;
            correctedHistogram[bin(r.corrected()[e])]++;
        }
        int changed = 0;
        for (int j = 0; j < topK; j++) {
            boolean unbiased = false;
            for (int u : r.unbiased()) {
                unbiased |= u == r.order()[j];
            }
            changed += unbiased ? 0 : 1;
        }
        biasChangedSelections += changed;
        biasChangedTokens += changed > 0 ? 1 : 0;
    }

    private static int bin(double v) {
        return (int) Math.max(0, Math.min(BINS - 1, Math.floor((v - BIN_FROM) / BIN_WIDTH)));
    }

    /**
     * topmSqSum[m-1] += Σ_{i≤m} p_(i)² / (Σ_{i≤m} p_(i))², p_(i) the scores in the router's order, m up to the experts
     * it may choose.
     */
    private void addTopM(double[] scores, int[] order) {
        double sum = 0;
        double sumSq = 0;
        for (int m = 1; m <= order.length; m++) {
            double g = scores[order[m - 1]];
            sum += g;
            sumSq += g * g;
            topmSqSum.add(m - 1, sumSq / (sum * sum));
        }
    }

    /** this += other (exact). */
    public LayerRouterStats merge(LayerRouterStats other) {
        if (other.experts != experts || other.topK != topK || other.groupKept.length != groupKept.length
                || other.scoreHistogram.length != scoreHistogram.length || other.normalised != normalised) {
            throw new IllegalArgumentException("merging statistics of " + other.experts + " experts, top-" + other.topK
                    + " into " + experts + " experts, top-" + topK + " (or of another kind of router)");
        }
        for (int i = 0; i < groupKept.length; i++) {
            groupKept[i] += other.groupKept[i];
        }
        for (int i = 0; i < scoreHistogram.length; i++) {
            scoreHistogram[i] += other.scoreHistogram[i];
            correctedHistogram[i] += other.correctedHistogram[i];
        }
        biasChangedTokens += other.biasChangedTokens;
        biasChangedSelections += other.biasChangedSelections;
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

    /** An empty accumulator of the same kind (experts, top-K, groups, bias, scores). */
    public LayerRouterStats emptyLike() {
        return new LayerRouterStats(experts, topK, normalised, Math.max(1, groupKept.length), scoreHistogram.length > 0);
    }

    /** [G]: tokens that kept each group; empty without group-limited selection. */
    public long[] groupKept() {
        return groupKept.clone();
    }

    /** [G]: the selections that fell in each group (its experts' counts summed); empty without groups. */
    public long[] groupLoad() {
        long[] load = new long[groupKept.length];
        for (int e = 0; e < experts && load.length > 0; e++) {
            load[e / (experts / load.length)] += count[e];
        }
        return load;
    }

    /** Whether the router has a correction bias, so that the bias statistics below are recorded. */
    public boolean biased() {
        return scoreHistogram.length > 0;
    }

    /** [BINS] the scores before the correction bias; empty without one. */
    public long[] scoreHistogram() {
        return scoreHistogram.clone();
    }

    /** [BINS] the scores after the correction bias (what selection ranks); empty without one. */
    public long[] correctedHistogram() {
        return correctedHistogram.clone();
    }

    /** Tokens whose top-K the correction bias changes. */
    public long biasChangedTokens() {
        return biasChangedTokens;
    }

    /** Selections the correction bias brings in (each replaces one the scores alone would make). */
    public long biasChangedSelections() {
        return biasChangedSelections;
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
                && entropySum.sameAs(other.entropySum) && topmSqSum.sameAs(other.topmSqSum)
                && normalised == other.normalised && Arrays.equals(groupKept, other.groupKept)
                && Arrays.equals(scoreHistogram, other.scoreHistogram)
                && Arrays.equals(correctedHistogram, other.correctedHistogram)
                && biasChangedTokens == other.biasChangedTokens && biasChangedSelections == other.biasChangedSelections;
    }
}
