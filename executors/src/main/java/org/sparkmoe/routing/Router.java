package org.sparkmoe.routing;

import java.util.Arrays;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.kernels.Dense;
import org.sparkmoe.kernels.Flat;

/**
 * The gate of an MoE layer: {@code logits [T,E] = x [T,D] · Wgᵀ (+ b)}, then a {@link RoutingRule} picks K experts
 * per token and weighs them. A score-correction bias (DeepSeek-V3's {@code e_score_correction_bias}) is added to
 * the scores for the selection only; the weights use the uncorrected scores. Both biases are frozen statistics or
 * weights of the checkpoint; the weight may be a trainable copy.
 */
public final class Router {
    private final INDArray weight;       // [E, D]
    private final INDArray bias;         // [E], null without one
    private final double[] correction;   // [E] selection-only bias, null without one

    /** A router without biases (Mixtral, Qwen2/3-MoE, OLMoE). */
    public Router(INDArray weight) {
        this(weight, null, null);
    }

    public Router(INDArray weight, INDArray bias, double[] correction) {
        int e = (int) weight.size(0);
        if (weight.rank() != 2) {
            throw new IllegalArgumentException("router weight must be [E, D], got " + Arrays.toString(weight.shape()));
        }
        if (bias != null && bias.length() != e) {
            throw new IllegalArgumentException("router bias must have E = " + e + " entries, got " + bias.length());
        }
        if (correction != null && correction.length != e) {
            throw new IllegalArgumentException("score-correction bias must have E = " + e + " entries, got "
                    + correction.length);
        }
        this.weight = weight;
        this.bias = bias;
        this.correction = correction;
    }

    public int experts() {
        return (int) weight.size(0);
    }

    /** @return the router weight [E, D] (do not modify) */
    public INDArray weight() {
        return weight;
    }

    /** @return the logit bias [E] (gpt-oss's {@code mlp.router.bias}), or null (do not modify) */
    public INDArray bias() {
        return bias;
    }

    /** The same router with another weight [E, D] (a trainable copy); the biases stay. */
    public Router withWeight(INDArray w) {
        return new Router(w, bias, correction);
    }

    /** The same router with another weight [E, D] and logit bias [E] (trainable copies); the correction stays. */
    public Router withWeightAndBias(INDArray w, INDArray b) {
        return new Router(w, b, correction);
    }

    /** @return logits [T, E] = x [T, D] · Wgᵀ (+ b) */
    public INDArray logits(INDArray x) {
        return Dense.linear(x, weight, bias);
    }

    /** Routes T tokens from their logits [T, E] (FLOAT: rounded as a float32 router; DOUBLE: float64). */
    public Routes route(INDArray logits, RoutingRule rule) {
        int numExperts = experts();
        if (logits.rank() != 2 || logits.size(1) != numExperts) {
            throw new IllegalArgumentException("router logits must be [T, " + numExperts + "], got "
                    + Arrays.toString(logits.shape()));
        }
        return route(Flat.values(logits), (int) logits.size(0), logits.dataType() == DataType.FLOAT, rule);
    }

    /** Routes from float64 logits [T·E] (overwritten by the scores). */
    Routes route(double[] logits, int tokens, boolean single, RoutingRule rule) {
        int numExperts = experts();
        int topK = rule.topK();
        if (topK > numExperts) {
            throw new IllegalArgumentException("top-k must be in [1, " + numExperts + "], got " + topK);
        }
        if (numExperts % rule.groups() != 0) {
            throw new IllegalArgumentException("n_group " + rule.groups() + " must divide the " + numExperts
                    + " experts");
        }
        double[] scores = logits;                                                   // [T·E], in place
        int[] experts = new int[tokens * topK];                                     // [T·K]
        double[] weights = new double[tokens * topK];                               // [T·K]
        double[] choice = correction == null ? scores : new double[numExperts];     // [E] selection scores
        for (int t = 0; t < tokens; t++) {
            int at = t * numExperts;
            rule.scores().apply(scores, at, numExperts, single);
            int from = at;
            if (correction != null) {
                for (int e = 0; e < numExperts; e++) {
                    choice[e] = Flat.round(scores[at + e] + correction[e], single);
                }
                from = 0;
            }
            boolean[] allowed = rule.groupLimited() ? allowed(bestGroups(choice, from, numExperts, rule), numExperts, rule)
                    : null;
            TopK.select(choice, from, numExperts, topK, allowed, experts, t * topK);
            double sum = 0;
            for (int k = 0; k < topK; k++) {
                weights[t * topK + k] = scores[at + experts[t * topK + k]];
                sum = Flat.round(sum + weights[t * topK + k], single);
            }
            for (int k = 0; k < topK; k++) {
                int p = t * topK + k;
                if (rule.normalizeTopK()) {
                    weights[p] = Flat.round(weights[p] / sum, single);
                }
                if (rule.scalingFactor() != 1.0) {
                    weights[p] = Flat.round(weights[p] * rule.scalingFactor(), single);
                }
            }
        }
        return new Routes(rule, scores, experts, weights, numExperts);
    }

    /**
     * One token's routing seen whole, for calibration.
     *
     * @param scores     [E] the rule's scores (softmax or sigmoid), without the correction bias
     * @param corrected  [E] the scores plus the correction bias (the scores themselves without a bias)
     * @param order      the experts the rule may choose (those of the kept groups; all without groups), in the order
     *                   it chooses them (by the corrected scores, ties to the lower index): top-m is a prefix for every m
     * @param keptGroups the kept groups, null without group-limited selection
     * @param unbiased   [K] the experts the rule would choose without the correction bias (groups ranked without it
     *                   too), null without a bias
     */
    public record Ranking(double[] scores, double[] corrected, int[] order, int[] keptGroups, int[] unbiased) {
    }

    /** The {@link Ranking} of each of T tokens from their logits [T, E], as {@link #route} would choose. */
    public Ranking[] rank(INDArray logits, RoutingRule rule) {
        int numExperts = experts();
        if (logits.rank() != 2 || logits.size(1) != numExperts) {
            throw new IllegalArgumentException("router logits must be [T, " + numExperts + "], got "
                    + Arrays.toString(logits.shape()));
        }
        boolean single = logits.dataType() == DataType.FLOAT;
        double[] all = Flat.values(logits);
        Ranking[] out = new Ranking[(int) logits.size(0)];
        for (int t = 0; t < out.length; t++) {
            double[] scores = Arrays.copyOfRange(all, t * numExperts, (t + 1) * numExperts);
            rule.scores().apply(scores, 0, numExperts, single);
            double[] corrected = scores;
            if (correction != null) {
                corrected = new double[numExperts];
                for (int e = 0; e < numExperts; e++) {
                    corrected[e] = Flat.round(scores[e] + correction[e], single);
                }
            }
            int[] kept = rule.groupLimited() ? bestGroups(corrected, 0, numExperts, rule) : null;
            int[] order = order(corrected, kept == null ? null : allowed(kept, numExperts, rule));
            int[] unbiased = null;
            if (correction != null) {
                unbiased = new int[rule.topK()];
                boolean[] allowed = rule.groupLimited()
                        ? allowed(bestGroups(scores, 0, numExperts, rule), numExperts, rule) : null;
                TopK.select(scores, 0, numExperts, rule.topK(), allowed, unbiased, 0);
            }
            out[t] = new Ranking(scores, corrected, order, kept, unbiased);
        }
        return out;
    }

    /** The allowed indices of v (all when null) by descending value, ties to the lower index, as {@link TopK}. */
    private static int[] order(double[] v, boolean[] allowed) {
        return java.util.stream.IntStream.range(0, v.length).filter(i -> allowed == null || allowed[i]).boxed()
                .sorted((a, b) -> Double.compare(v[b], v[a])).mapToInt(Integer::intValue).toArray();
    }

    /** The {@code topGroups} best groups of v[at .. at+E), ranked by the rule, best first. */
    private static int[] bestGroups(double[] v, int at, int numExperts, RoutingRule rule) {
        int size = numExperts / rule.groups();
        double[] rank = new double[rule.groups()];
        int[] two = new int[2];
        for (int g = 0; g < rule.groups(); g++) {
            if (rule.groupRank() == RoutingRule.GroupRank.MAX || size < 2) {
                TopK.select(v, at + g * size, size, 1, null, two, 0);
                rank[g] = v[at + g * size + two[0]];
            } else {
                TopK.select(v, at + g * size, size, 2, null, two, 0);
                rank[g] = v[at + g * size + two[0]] + v[at + g * size + two[1]];
            }
        }
        int[] kept = new int[rule.topGroups()];
        TopK.select(rank, 0, rule.groups(), rule.topGroups(), null, kept, 0);
        return kept;
    }

    /** [E]: whether each expert lies in one of the kept groups. */
    private static boolean[] allowed(int[] keptGroups, int numExperts, RoutingRule rule) {
        int size = numExperts / rule.groups();
        boolean[] allowed = new boolean[numExperts];
        for (int g : keptGroups) {
            Arrays.fill(allowed, g * size, (g + 1) * size, true);
        }
        return allowed;
    }
}
