package org.sparkmoe.surgery;

import com.fasterxml.jackson.databind.node.ObjectNode;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.sparkmoe.io.CheckpointLayout;
import org.sparkmoe.io.CheckpointLayout.Projection;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.io.TensorSource;
import org.sparkmoe.train.Seeds;

import java.util.LinkedHashMap;

/**
 * E experts → E' per MoE layer: seeded k-means over the experts, either on routing profiles (per-file selection
 * rates and the mean router logit, each column standardised over the experts) or on the flattened weights
 * (w1, w3, w2 concatenated, streamed from the checkpoint block by block: {@link ExpertPoints}); each cluster becomes one expert whose weights, and whose gate row, are the
 * frequency-weighted means of its members' (frequency fₑ = calibration selection count; uniform without statistics,
 * or within a cluster none of whose members was ever selected). The expert count (num_local_experts or num_experts)
 * = E' and {@code num_experts_per_tok} = min(K, E'). Any MoE type; a shared expert is kept as it is.
 *
 * <p>Routers with a correction bias (GLM-4.5, DeepSeek-V3, Kimi-K2: {@code topk_method} noaux_tc): a router's
 * {@code e_score_correction_bias} entries merge with the same member weights as its gate rows. With group-limited
 * selection (noaux_tc, or DeepSeek-V2's group_limited_greedy, with {@code topk_group} < {@code n_group}) the experts
 * are clustered within each group, so every merged expert stays in its group and the E'/n_group experts of group j are
 * numbered j·E'/n_group onwards; E' must then be a multiple of n_group with at least two experts per group for
 * noaux_tc (groups ranked by their two best scores; one for group_limited_greedy, ranked by their best) and the
 * {@code topk_group} kept groups must hold min(K, E') experts, else {@code --experts} is refused. Without
 * group-limited selection (greedy, or every group kept) the groups choose nothing: clusters may cross them, and the
 * config gets {@code n_group} = {@code topk_group} = 1 (the same selection, and n_group always divides E'); noaux_tc
 * still ranks its one group by two scores, so E' ≥ 2 there. The expert count is written as {@code n_routed_experts}
 * for GLM and DeepSeek.
 *
 * <p>gpt-oss's expert biases and router bias entries are merged with the same weights as the weights and gate rows.
 *
 * <p>Each layer is cut into parts of at most {@link TopKSurgery#PART_BYTES} of new float32 projections (new expert g's
 * w1, w3, w2, then g + 1's, ...; the last part adds the router's tensors), each merging only its share with the
 * layer's clusters. Clustering by routing profiles is cheap and the same in every task, so each part clusters again;
 * clustering by weights streams the whole layer's experts several times, so it runs once per layer
 * ({@link #shared}, a task of its own) and its clusters go to the parts ({@link #withShared}).
 */
public final class ExpertReduceSurgery implements LayerSurgery {
    private static final long serialVersionUID = 1L;

    public enum By { ROUTING, WEIGHTS }

    private final int newExperts;
    private final int experts;
    private final ModelConfig.ModelType type;
    private final int groups;                   // n_group: clusters never cross a group
    private final boolean correctionBias;       // whether each router carries e_score_correction_bias [E]
    private final boolean biases;               // gpt-oss: expert and router biases
    private final double[][][] routingFeatures; // [MoE layers][E][F], null when clustering by weights
    private final double[][] frequency;         // [MoE layers][E]
    private final long seed;
    private final int projectionsPerPart;       // new projections (expert g, projection p) one part merges
    private final int[][][] clusters;           // [MoE layers][E'][members] made once per layer (by weights), or null

    /**
     * @param stats null only with {@link By#WEIGHTS}; then every expert counts the same when merging
     */
    public ExpertReduceSurgery(ModelConfig model, int moeLayers, int newExperts, By by, RoutingStats stats, long seed) {
        if (model.num_experts == 0) {
            throw new IllegalArgumentException("reduce needs an MoE model, got model_type "
                    + model.modelType.name().toLowerCase());
        }
        if (newExperts < 1 || newExperts >= model.num_experts) {
            throw new IllegalArgumentException("--experts must be in [1, " + (model.num_experts - 1)
                    + "] (fewer than the model's " + model.num_experts + "), got " + newExperts);
        }
        if (by == By.ROUTING && stats == null) {
            throw new IllegalArgumentException("--by routing needs --stats (router-stats.json from calibrate)");
        }
        int nGroup = ExpertCount.groups(model, newExperts);
        this.newExperts = newExperts;
        this.experts = model.num_experts;
        this.type = model.modelType;
        this.groups = nGroup;
        this.correctionBias = model.routing.scoreCorrectionBias();
        this.biases = model.clamped_experts;
        this.seed = seed;
        long projectionBytes = (long) Float.BYTES * model.hidden_size * model.expert_intermediate_size;
        int projections = newExperts * Projection.values().length;
        this.projectionsPerPart = (int) Math.max(1, Math.min(projections, TopKSurgery.PART_BYTES / projectionBytes));
        this.clusters = null;
        this.frequency = new double[moeLayers][experts];
        this.routingFeatures = by == By.ROUTING ? new double[moeLayers][][] : null;
        for (int i = 0; i < moeLayers; i++) {
            for (int e = 0; e < experts; e++) {
                frequency[i][e] = stats == null ? 1.0 : stats.layer(i).count()[e];
            }
            if (routingFeatures != null) {
                routingFeatures[i] = routingProfile(stats, i);
            }
        }
    }

    private ExpertReduceSurgery(ExpertReduceSurgery s, int[][][] clusters) {
        this.newExperts = s.newExperts;
        this.experts = s.experts;
        this.type = s.type;
        this.groups = s.groups;
        this.correctionBias = s.correctionBias;
        this.biases = s.biases;
        this.routingFeatures = s.routingFeatures;
        this.frequency = s.frequency;
        this.seed = s.seed;
        this.projectionsPerPart = s.projectionsPerPart;
        this.clusters = clusters;
    }

    /** [E][files + 1]: each file's selection rate and the mean logit, every column standardised over the experts. */
    static double[][] routingProfile(RoutingStats stats, int moeLayer) {
        int e = stats.experts();
        int f = stats.files();
        double[][] x = new double[e][f + 1];
        for (int file = 0; file < f; file++) {
            double[] rate = stats.fileRate(file, moeLayer);
            for (int j = 0; j < e; j++) {
                x[j][file] = rate[j];
            }
        }
        double[] logit = stats.layer(moeLayer).meanLogit();
        for (int j = 0; j < e; j++) {
            x[j][f] = logit[j];
        }
        for (int c = 0; c <= f; c++) {
            double mean = 0;
            for (double[] row : x) {
                mean += row[c] / e;
            }
            double var = 0;
            for (double[] row : x) {
                var += (row[c] - mean) * (row[c] - mean) / e;
            }
            double sd = Math.sqrt(var);
            for (double[] row : x) {
                row[c] = sd > 0 ? (row[c] - mean) / sd : 0;
            }
        }
        return x;
    }

    /** Slices of at most {@link TopKSurgery#PART_BYTES} of new projections. */
    @Override
    public int parts() {
        int projections = newExperts * Projection.values().length;
        return (projections + projectionsPerPart - 1) / projectionsPerPart;
    }

    /** By weights: the k-means streams the layer's experts, once per layer for all its parts. */
    @Override
    public boolean sharesWork() {
        return routingFeatures == null;
    }

    /** The layer's clusters: [E'][members], each new expert's original experts. */
    @Override
    public int[][] shared(TensorSource source, int layer, int moeLayer) {
        CheckpointLayout layout = new CheckpointLayout(type);
        ExpertStack[] stacks = new ExpertStack[Projection.values().length]; // each E × [rows, cols], as stored
        for (Projection p : Projection.values()) {
            stacks[p.ordinal()] = ExpertStack.of(source, layout, layer, experts, p);
        }
        return clusterWithinGroups(stacks, moeLayer, Seeds.derive(seed, "reduce/layer/" + layer));
    }

    @Override
    public ExpertReduceSurgery withShared(java.io.Serializable[] perMoeLayer) {
        return new ExpertReduceSurgery(this, java.util.Arrays.copyOf(perMoeLayer, perMoeLayer.length, int[][][].class));
    }

    @Override
    public LayerResult applyPart(TensorSource source, int layer, int moeLayer, int part) {
        CheckpointLayout layout = new CheckpointLayout(type);
        ExpertStack[] stacks = new ExpertStack[Projection.values().length]; // each E × [rows, cols], as stored
        for (Projection p : Projection.values()) {
            stacks[p.ordinal()] = ExpertStack.of(source, layout, layer, experts, p);
        }
        int[][] groups = clusters != null && moeLayer < clusters.length && clusters[moeLayer] != null
                ? clusters[moeLayer] : shared(source, layer, moeLayer);
        LinkedHashMap<String, INDArray> out = new LinkedHashMap<>();
        int projections = Projection.values().length;
        int last = Math.min(newExperts * projections, (part + 1) * projectionsPerPart);
        INDArray[] biasStacks = new INDArray[projections]; // each [E, 1, n], gpt-oss only, read when first needed
        for (int at = part * projectionsPerPart; at < last; at++) {   // new expert g's w1, w3, w2, then g + 1's
            int g = at / projections;
            Projection p = Projection.values()[at % projections];
            double[] w = memberWeights(groups[g], frequency[moeLayer]);
            out.put(layout.expert(layer, g, p), stacks[p.ordinal()].weightedSum(w, DataType.FLOAT));
            if (biases) {
                if (biasStacks[p.ordinal()] == null) {
                    biasStacks[p.ordinal()] = ExpertStack.readBiases(source, layout, layer, experts, p);
                }
                out.put(layout.expertBias(layer, g, p),
                        ExpertStack.weightedSum(biasStacks[p.ordinal()], w).reshape(-1));
            }
        }
        if (part == parts() - 1) {
            mergeRouter(source, layout, layer, groups, moeLayer, out);
        }
        LinkedHashMap<String, Double> metrics = new LinkedHashMap<>();
        metrics.put("experts", (double) newExperts);
        return new LayerResult(out, groups, metrics);
    }

    /** The new router: gate rows, and the correction bias or gpt-oss's router bias, merged as the experts. */
    private void mergeRouter(TensorSource source, CheckpointLayout layout, int layer, int[][] groups, int moeLayer,
            LinkedHashMap<String, INDArray> out) {
        INDArray gate = source.readFloat(layout.routerGate(layer)); // [E, D]
        INDArray newGate = Nd4j.createUninitialized(gate.dataType(), newExperts, gate.size(1)); // [E', D]
        INDArray gateStack = gate.reshape(experts, 1, gate.size(1)); // [E, 1, D]
        INDArray bias = correctionBias ? source.readFloat(layout.scoreCorrectionBias(layer)) : null;  // [E]
        INDArray newBias = correctionBias ? Nd4j.createUninitialized(bias.dataType(), newExperts) : null; // [E']
        INDArray routerBias = biases ? source.readFloat(layout.routerBias(layer)).reshape(experts, 1, 1) : null;
        INDArray newRouterBias = biases ? Nd4j.createUninitialized(routerBias.dataType(), newExperts) : null; // [E']
        for (int g = 0; g < groups.length; g++) {
            double[] w = memberWeights(groups[g], frequency[moeLayer]);
            newGate.getRow(g).assign(ExpertStack.weightedSum(gateStack, w).reshape(gate.size(1)));
            if (correctionBias) {
                double b = 0;
                for (int e : groups[g]) {
                    b += w[e] * bias.getDouble(e);
                }
                newBias.putScalar(g, b);
            }
            if (biases) {
                newRouterBias.putScalar(g, ExpertStack.weightedSum(routerBias, w).getDouble(0));
            }
        }
        out.put(layout.routerGate(layer), newGate);
        if (correctionBias) {
            out.put(layout.scoreCorrectionBias(layer), newBias);
        }
        if (biases) {
            out.put(layout.routerBias(layer), newRouterBias);
        }
    }

    /**
     * k-means of each expert group's points (routing profiles, or the weights streamed from the checkpoint: see
     * {@link ExpertPoints}) into E'/n_group clusters (one group: all E experts into E'), the clusters of group j
     * numbered after those of groups 0..j−1, members as indices into the E experts.
     */
    private int[][] clusterWithinGroups(ExpertStack[] stacks, int moeLayer, long layerSeed) {
        int size = experts / groups;
        int per = newExperts / groups;
        int[][] out = new int[newExperts][];
        for (int j = 0; j < groups; j++) {
            KMeans.Points part = routingFeatures != null
                    ? KMeans.inMemory(java.util.Arrays.copyOfRange(routingFeatures[moeLayer], j * size, (j + 1) * size))
                    : new ExpertPoints(stacks, j * size, (j + 1) * size);
            long groupSeed = groups == 1 ? layerSeed : Seeds.derive(layerSeed, "group/" + j);
            int[][] clusters = KMeans.cluster(part, per, groupSeed);
            for (int c = 0; c < per; c++) {
                int[] members = clusters[c].clone();
                for (int m = 0; m < members.length; m++) {
                    members[m] += j * size;
                }
                out[j * per + c] = members;
            }
        }
        return out;
    }

    /** [E] weights, zero outside the group, the members' frequencies normalised (uniform when they sum to 0). */
    static double[] memberWeights(int[] group, double[] frequency) {
        double[] w = new double[frequency.length];
        double sum = 0;
        for (int e : group) {
            sum += frequency[e];
        }
        for (int e : group) {
            w[e] = sum > 0 ? frequency[e] / sum : 1.0 / group.length;
        }
        return w;
    }

    /**
     * A part's new projections in float32 (at most {@link TopKSurgery#PART_BYTES}, or one projection; with their
     * biases), the old and new router and the scratch of three {@link ExpertStack}s; the k-means by weights, in its
     * own task per layer, holds those stacks' scratch and {@link ExpertPoints#BLOCK_BYTES} on the heap.
     */
    @Override
    public long partBytes(ModelConfig model) {
        long projection = (long) model.hidden_size * model.expert_intermediate_size
                + (biases ? Math.max(model.hidden_size, model.expert_intermediate_size) : 0);
        return Float.BYTES * ((long) projectionsPerPart * projection + 2L * experts * (model.hidden_size + 2))
                + 3 * ExpertStack.scratchBytes();
    }

    @Override
    public ObjectNode config(ModelConfig original) {
        return ExpertCount.config(original, newExperts);
    }
}
