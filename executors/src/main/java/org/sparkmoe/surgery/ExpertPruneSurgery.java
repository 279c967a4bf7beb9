package org.sparkmoe.surgery;

import com.fasterxml.jackson.databind.node.ObjectNode;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.sparkmoe.io.CheckpointLayout;
import org.sparkmoe.io.CheckpointLayout.Projection;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.io.TensorSource;

import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * E experts → E' per MoE layer by dropping the lowest-scoring ones ({@link ExpertScores}: REAP saliency, frequency or
 * EAN from calibrate; ties keep the lower index). The E' kept experts keep their order and their weights exactly: new
 * expert g is the g-th kept one, its tensors the original's under the new index ({@link #renamed}, copied by the
 * writer as stored), its gate row, gpt-oss router-bias entry and DeepSeek/GLM correction-bias entry the original's.
 * A shared expert stays as it is. With group-limited selection every group keeps its E'/n_group best experts (the
 * groups are contiguous, so they stay groups; {@link ExpertCount} refuses an E' that breaks them); E' ≥ K always.
 *
 * <p>{@link #global}: E' per layer is a budget over all layers ({@link GlobalSelection}), so layer l keeps k_l
 * experts. A config.json has one expert count, so every layer holds E_max = max k_l experts (its best E_max, as the
 * per-layer prune to E_max keeps them; with groups, every group its best max m_{l,g}) and the E_max − k_l beyond its
 * own are masked: their gate rows are zero and their selection bias (gpt-oss's router bias, or
 * {@code e_score_correction_bias}) is {@link #MASKED}, so the router never chooses them and the weights of the chosen
 * experts are unchanged.
 *
 * <p>The layer's {@link LayerResult#groups} make the expert map {@code retrain-router --expert-map} takes: group g is
 * kept expert g followed by the dropped experts whose gate rows are closest to its (cosine, within the same expert
 * group), so a router retrained to it sends a dropped expert's tokens to the kept expert the router already treats
 * most like it.
 */
public final class ExpertPruneSurgery implements LayerSurgery {
    private static final long serialVersionUID = 1L;

    /**
     * The selection bias of a masked expert: −2¹⁴, exact in float32, bfloat16 and float16, far below any router logit
     * or sigmoid score plus correction bias (so a masked expert is never among a token's top K, nor among a group's
     * two best unless the group has fewer than two unmasked experts), and finite: twice it is still a float16, and
     * no softmax, sigmoid or group sum meets an infinity (−∞ would give ∞ − ∞ = NaN in a sum or a softmax over masked
     * entries only).
     */
    public static final float MASKED = -16384f;

    private final int experts;
    private final int newExperts;             // E_max: the experts every layer of the checkpoint holds
    private final ModelConfig.ModelType type;
    private final int groups;                 // n_group the selection keeps
    private final boolean correctionBias;     // e_score_correction_bias [E] beside each router
    private final boolean biases;             // gpt-oss: expert and router biases
    private final int[][] kept;               // [MoE layers][E'] original indices, ascending
    private final boolean[][] masked;         // [MoE layers][E'] new expert g is masked (never selected)
    private final double[][] scoreShare;      // [MoE layers] {kept share of the scores, dropped share of the routed tokens}

    /**
     * Per-layer prune: every MoE layer keeps its E' best experts.
     *
     * @param scores calibrate's expert-scores.json of this model
     * @param method what the experts are ranked by
     */
    public ExpertPruneSurgery(ModelConfig model, int newExperts, ExpertScores scores, ExpertScores.Method method) {
        this(model, checkRange(model, newExperts), ExpertCount.groups(model, newExperts), perLayer(model, newExperts,
                scores, method), scores, method);
    }

    private ExpertPruneSurgery(ModelConfig model, int newExperts, int groups, int[][][] keptAndSelectable,
                               ExpertScores scores, ExpertScores.Method method) {
        this.groups = groups;
        this.experts = model.num_experts;
        this.newExperts = newExperts;
        this.type = model.modelType;
        this.correctionBias = model.routing.scoreCorrectionBias();
        this.biases = model.clamped_experts;
        this.kept = keptAndSelectable[0];
        this.masked = new boolean[kept.length][newExperts];
        this.scoreShare = new double[kept.length][];
        for (int l = 0; l < kept.length; l++) {
            double[] s = scores.scores(method, l);
            long[] routed = scores.routed(l);
            boolean[] isSelectable = new boolean[experts];
            for (int e : keptAndSelectable[1][l]) {
                isSelectable[e] = true;
            }
            for (int g = 0; g < newExperts; g++) {
                masked[l][g] = !isSelectable[kept[l][g]];
            }
            double keptScore = 0;
            double allScore = 0;
            long droppedRouted = 0;
            long allRouted = 0;
            for (int e = 0; e < experts; e++) {
                allScore += s[e];
                keptScore += isSelectable[e] ? s[e] : 0;
                allRouted += routed[e];
                droppedRouted += isSelectable[e] ? 0 : routed[e];
            }
            scoreShare[l] = new double[] {allScore == 0 ? 0 : keptScore / allScore,
                    allRouted == 0 ? 0 : (double) droppedRouted / allRouted};
        }
    }

    private static int checkRange(ModelConfig model, int newExperts) {
        if (newExperts >= model.num_experts || newExperts < model.num_experts_per_tok) {
            throw new IllegalArgumentException("--experts must be in [" + model.num_experts_per_tok + ", "
                    + (model.num_experts - 1) + "] (at least num_experts_per_tok " + model.num_experts_per_tok
                    + ", fewer than the model's " + model.num_experts + "), got " + newExperts);
        }
        return newExperts;
    }

    /** {kept, kept}: every kept expert is selectable. */
    private static int[][][] perLayer(ModelConfig model, int newExperts, ExpertScores scores, ExpertScores.Method method) {
        int groups = ExpertCount.groups(model, newExperts);
        int[][] kept = new int[scores.moeLayers()][];
        for (int l = 0; l < kept.length; l++) {
            kept[l] = keep(scores.scores(method, l), model.num_experts / groups, newExperts / groups);
        }
        return new int[][][] {kept, kept};
    }

    /**
     * Global prune ({@code --global}): L·E' experts kept over all L MoE layers, at least {@code floor} per layer, by
     * each layer's score share ({@link GlobalSelection}); layers that keep fewer than E_max hold the rest masked.
     * Refused for a family without a per-expert selection bias in its checkpoint, for a floor below K or above E',
     * and where a layer's kept experts sit so in the expert groups that the groups the router chooses could hold fewer
     * than K of them. Selected experts in a group the router can never choose (fewer than two selected, noaux_tc,
     * while topk_group groups have two or more) are masked too: then a layer keeps fewer than the budget gave it.
     */
    public static ExpertPruneSurgery global(ModelConfig model, int newExperts, int floor, ExpertScores scores,
                                            ExpertScores.Method method) {
        String name = model.modelType.name().toLowerCase(java.util.Locale.ROOT);
        if (!model.routing.scoreCorrectionBias() && !model.clamped_experts) {
            throw new IllegalArgumentException("--global needs a per-expert selection bias in the checkpoint to mask "
                    + "experts (gpt_oss's router bias, or e_score_correction_bias of glm4_moe, deepseek_v3, kimi_k2): "
                    + "a " + name + " config.json holds one expert count for every layer and its router has none, so "
                    + "its layers cannot keep different numbers of experts; prune per layer (without --global)");
        }
        checkRange(model, newExperts);
        int k = model.num_experts_per_tok;
        if (floor < k || floor > newExperts) {
            throw new IllegalArgumentException("--min-experts-per-layer must be in [" + k + ", " + newExperts
                    + "] (at least num_experts_per_tok " + k + ": a layer needs " + k + " selectable experts; at most "
                    + "--experts " + newExperts + ", or F·L exceeds the budget of L·E' experts), got " + floor);
        }
        double[][] shares = new double[scores.moeLayers()][];
        for (int l = 0; l < shares.length; l++) {
            shares[l] = scores.scores(method, l);
        }
        shares = GlobalSelection.shares(shares);
        int[][] selectable = GlobalSelection.select(shares, newExperts, floor);
        int nGroup = model.routing.groupLimited() ? model.routing.n_group() : 1;
        int size = model.num_experts / nGroup;
        int minPerGroup = model.routing.groupRankTop2Sum() ? 2 : 1;
        int[][] counts = new int[shares.length][nGroup];   // [MoE layers][groups] selected experts per group
        for (int l = 0; l < shares.length; l++) {
            for (int e : selectable[l]) {
                counts[l][e / size]++;
            }
        }
        int perGroup = minPerGroup;             // experts every group holds: the most any layer keeps in one group
        for (int l = 0; l < shares.length; l++) {
            if (nGroup > 1) {
                int reach = ExpertCount.reach(counts[l], model.routing.topk_group(), minPerGroup);
                if (reach < k) {
                    throw new IllegalArgumentException("--global: MoE layer " + l + " keeps " + Arrays.toString(counts[l])
                            + " experts in its " + nGroup + " groups, so the topk_group " + model.routing.topk_group()
                            + " groups its router chooses may hold only " + reach + " of num_experts_per_tok " + k
                            + "; prune per layer (without --global) or raise --min-experts-per-layer");
                }
                selectable[l] = reachable(selectable[l], counts[l], size, model.routing.topk_group(), minPerGroup);
            }
            for (int c : counts[l]) {
                perGroup = Math.max(perGroup, c);
            }
        }
        int held = nGroup * perGroup;
        int[][] kept = new int[shares.length][];
        for (int l = 0; l < kept.length; l++) {
            kept[l] = keep(shares[l], size, perGroup);
        }
        return new ExpertPruneSurgery(model, held, ExpertCount.groups(model, held), new int[][][] {kept, selectable},
                scores, method);
    }

    /**
     * The selected experts of one layer the router can reach: when {@code topkGroup} groups hold at least
     * {@code ranked} selected experts, those always win the group choice, so a group with fewer is never chosen and its
     * experts are masked too (which changes no routing); {@code counts} is updated.
     */
    private static int[] reachable(int[] selected, int[] counts, int size, int topkGroup, int ranked) {
        if (Arrays.stream(counts).filter(c -> c >= ranked).count() < topkGroup) {
            return selected;
        }
        int[] out = Arrays.stream(selected).filter(e -> counts[e / size] >= ranked).toArray();
        for (int g = 0; g < counts.length; g++) {
            counts[g] = counts[g] >= ranked ? counts[g] : 0;
        }
        return out;
    }

    /**
     * The {@code perGroup} highest scores of each contiguous group of {@code size} experts (ties to the lower index),
     * as original indices in ascending order.
     */
    static int[] keep(double[] scores, int size, int perGroup) {
        int[] out = new int[scores.length / size * perGroup];
        for (int g = 0; g < scores.length / size; g++) {
            int from = g * size;
            int[] best = java.util.stream.IntStream.range(from, from + size).boxed()
                    .sorted((a, b) -> scores[a] != scores[b] ? Double.compare(scores[b], scores[a]) : Integer.compare(a, b))
                    .limit(perGroup).mapToInt(Integer::intValue).sorted().toArray();
            System.arraycopy(best, 0, out, g * perGroup, perGroup);
        }
        return out;
    }

    /** [E'] the original indices of the experts MoE layer l holds (selectable or masked), ascending. */
    public int[] kept(int moeLayer) {
        return kept[moeLayer].clone();
    }

    /** The original indices of MoE layer l's experts: those its router can choose ("kept") and those it holds masked. */
    @Override
    public Map<String, int[]> expertLists(int moeLayer) {
        Map<String, int[]> out = new LinkedHashMap<>();
        out.put("kept", java.util.stream.IntStream.range(0, newExperts).filter(g -> !masked[moeLayer][g])
                .map(g -> kept[moeLayer][g]).toArray());
        out.put("masked", java.util.stream.IntStream.range(0, newExperts).filter(g -> masked[moeLayer][g])
                .map(g -> kept[moeLayer][g]).toArray());
        return out;
    }

    @Override
    public Map<String, String> renamed(int layer, int moeLayer) {
        CheckpointLayout layout = new CheckpointLayout(type);
        Map<String, String> out = new LinkedHashMap<>();
        for (int g = 0; g < newExperts; g++) {
            for (Projection p : Projection.values()) {
                out.put(layout.expert(layer, g, p), layout.expert(layer, kept[moeLayer][g], p));
                if (biases) {
                    out.put(layout.expertBias(layer, g, p), layout.expertBias(layer, kept[moeLayer][g], p));
                }
            }
        }
        return out;
    }

    @Override
    public LayerResult applyPart(TensorSource source, int layer, int moeLayer, int part) {
        CheckpointLayout layout = new CheckpointLayout(type);
        int[] keep = kept[moeLayer];
        LinkedHashMap<String, INDArray> out = new LinkedHashMap<>();
        boolean[] mask = masked[moeLayer];
        INDArray gate = source.readFloat(layout.routerGate(layer));                           // [E, D]
        INDArray newGate = Nd4j.pullRows(gate, 1, keep);                                      // [E', D]
        for (int g = 0; g < keep.length; g++) {
            if (mask[g]) {
                newGate.getRow(g).assign(0);        // a masked expert's logit is its bias alone, whatever x
            }
        }
        out.put(layout.routerGate(layer), newGate);
        if (correctionBias) {
            out.put(layout.scoreCorrectionBias(layer),
                    entries(source.readFloat(layout.scoreCorrectionBias(layer)), keep, mask));
        }
        if (biases) {
            out.put(layout.routerBias(layer), entries(source.readFloat(layout.routerBias(layer)), keep, mask));
        }
        LinkedHashMap<String, Double> metrics = new LinkedHashMap<>();
        metrics.put("experts", (double) newExperts);
        metrics.put("kept_score_share", scoreShare[moeLayer][0]);
        metrics.put("dropped_routed_share", scoreShare[moeLayer][1]);
        return new LayerResult(out, absorbing(gate, keep), metrics);
    }

    /** The router's rows (read and kept) and vectors, float32: the experts are copied by the writer as stored. */
    @Override
    public long partBytes(ModelConfig model) {
        return Float.BYTES * (2L * model.num_experts * (model.hidden_size + 2));
    }

    /** [E'] the entries of a [E] selection-bias vector at the kept indices, {@link #MASKED} where masked. */
    private static INDArray entries(INDArray vector, int[] keep, boolean[] mask) {
        INDArray out = Nd4j.createUninitialized(vector.dataType(), keep.length);
        for (int g = 0; g < keep.length; g++) {
            out.putScalar(g, mask[g] ? MASKED : vector.getDouble(keep[g]));
        }
        return out;
    }

    /**
     * [E'][members]: kept expert g first, then the dropped experts of its expert group whose gate rows have the
     * largest cosine with its (ties to the lower kept index).
     */
    private int[][] absorbing(INDArray gate, int[] keep) {
        double[][] rows = gate.castTo(org.nd4j.linalg.api.buffer.DataType.DOUBLE).toDoubleMatrix(); // [E][D]
        int size = experts / groups;
        java.util.List<java.util.List<Integer>> members = new java.util.ArrayList<>();
        boolean[] isKept = new boolean[experts];
        for (int g = 0; g < keep.length; g++) {
            members.add(new java.util.ArrayList<>(java.util.List.of(keep[g])));
            isKept[keep[g]] = true;
        }
        for (int e = 0; e < experts; e++) {
            if (isKept[e]) {
                continue;
            }
            int best = -1;
            double bestCos = Double.NEGATIVE_INFINITY;
            for (int g = 0; g < keep.length; g++) {
                if (keep[g] / size != e / size) {
                    continue;
                }
                double c = cosine(rows[e], rows[keep[g]]);
                if (c > bestCos) {
                    bestCos = c;
                    best = g;
                }
            }
            members.get(best).add(e);
        }
        return members.stream().map(m -> m.stream().mapToInt(Integer::intValue).toArray()).toArray(int[][]::new);
    }

    private static double cosine(double[] a, double[] b) {
        double ab = 0;
        double aa = 0;
        double bb = 0;
        for (int i = 0; i < a.length; i++) {
            ab += a[i] * b[i];
            aa += a[i] * a[i];
            bb += b[i] * b[i];
        }
        return aa == 0 || bb == 0 ? 0 : ab / Math.sqrt(aa * bb);
    }

    @Override
    public ObjectNode config(ModelConfig original) {
        return ExpertCount.config(original, newExperts);
    }
}
