package org.sparkmoe.surgery;

import com.fasterxml.jackson.databind.node.ObjectNode;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.sparkmoe.io.CheckpointLayout;
import org.sparkmoe.io.CheckpointLayout.Projection;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.io.TensorSource;

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
 * <p>The layer's {@link LayerResult#groups} make the expert map {@code retrain-router --expert-map} takes: group g is
 * kept expert g followed by the dropped experts whose gate rows are closest to its (cosine, within the same expert
 * group), so a router retrained to it sends a dropped expert's tokens to the kept expert the router already treats
 * most like it.
 */
public final class ExpertPruneSurgery implements LayerSurgery {
    private static final long serialVersionUID = 1L;

    private final int experts;
    private final int newExperts;
    private final ModelConfig.ModelType type;
    private final int groups;                 // n_group the selection keeps
    private final boolean correctionBias;     // e_score_correction_bias [E] beside each router
    private final boolean biases;             // gpt-oss: expert and router biases
    private final int[][] kept;               // [MoE layers][E'] original indices, ascending
    private final double[][] scoreShare;      // [MoE layers] {kept share of the scores, dropped share of the routed tokens}

    /**
     * @param scores calibrate's expert-scores.json of this model
     * @param method what the experts are ranked by
     */
    public ExpertPruneSurgery(ModelConfig model, int newExperts, ExpertScores scores, ExpertScores.Method method) {
        if (newExperts >= model.num_experts || newExperts < model.num_experts_per_tok) {
            throw new IllegalArgumentException("--experts must be in [" + model.num_experts_per_tok + ", "
                    + (model.num_experts - 1) + "] (at least num_experts_per_tok " + model.num_experts_per_tok
                    + ", fewer than the model's " + model.num_experts + "), got " + newExperts);
        }
        this.groups = ExpertCount.groups(model, newExperts);
        this.experts = model.num_experts;
        this.newExperts = newExperts;
        this.type = model.modelType;
        this.correctionBias = model.routing.scoreCorrectionBias();
        this.biases = model.clamped_experts;
        this.kept = new int[scores.moeLayers()][];
        this.scoreShare = new double[scores.moeLayers()][];
        for (int l = 0; l < kept.length; l++) {
            double[] s = scores.scores(method, l);
            kept[l] = keep(s, experts / groups, newExperts / groups);
            long[] routed = scores.routed(l);
            double keptScore = 0;
            double allScore = 0;
            long droppedRouted = 0;
            long allRouted = 0;
            boolean[] isKept = new boolean[experts];
            for (int e : kept[l]) {
                isKept[e] = true;
                keptScore += s[e];
            }
            for (int e = 0; e < experts; e++) {
                allScore += s[e];
                allRouted += routed[e];
                droppedRouted += isKept[e] ? 0 : routed[e];
            }
            scoreShare[l] = new double[] {allScore == 0 ? 0 : keptScore / allScore,
                    allRouted == 0 ? 0 : (double) droppedRouted / allRouted};
        }
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

    /** [E'] the original indices of the experts MoE layer l keeps, ascending. */
    public int[] kept(int moeLayer) {
        return kept[moeLayer].clone();
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
        INDArray gate = source.readFloat(layout.routerGate(layer));                           // [E, D]
        out.put(layout.routerGate(layer), Nd4j.pullRows(gate, 1, keep));                     // [E', D]
        if (correctionBias) {
            out.put(layout.scoreCorrectionBias(layer), entries(source.readFloat(layout.scoreCorrectionBias(layer)), keep));
        }
        if (biases) {
            out.put(layout.routerBias(layer), entries(source.readFloat(layout.routerBias(layer)), keep));
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

    /** [E'] the entries of a [E] vector at the kept indices. */
    private static INDArray entries(INDArray vector, int[] keep) {
        INDArray out = Nd4j.createUninitialized(vector.dataType(), keep.length);
        for (int g = 0; g < keep.length; g++) {
            out.putScalar(g, vector.getDouble(keep[g]));
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
