package org.sparkmoe.calib;

import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.model.DecoderLayer;
import org.sparkmoe.model.MoeTransformer;
import org.sparkmoe.experts.ExpertWeights;
import org.sparkmoe.experts.CpExperts;
import org.sparkmoe.experts.FullExperts;
import org.sparkmoe.experts.TrExperts;
import org.sparkmoe.moe.MoeBlock;
import org.sparkmoe.routing.Router;
import org.sparkmoe.kernels.Activations;
import org.sparkmoe.kernels.Dense;
import org.sparkmoe.kernels.Workers;
import org.sparkmoe.model.LinearInputs;
import org.sparkmoe.model.AdapterTerms;

import java.util.ArrayList;
import java.util.List;
import java.util.function.IntFunction;

/**
 * Everything a calibration pass accumulates, as one exact mergeable aggregate: router statistics per input
 * file and MoE layer, and expert activation statistics and saliency (REAP, EAN) per MoE layer. {@link #add} takes one forward pass's
 * capture; {@link #merge} combines partial aggregates in any order with the same result.
 */
public final class CalibrationStats implements java.io.Serializable {
    private final LayerRouterStats[][] router;       // [files][MoE layers]
    private final ExpertActivationStats[] activations; // [MoE layers]
    private final ExpertSaliencyStats[] saliency;      // [MoE layers]
    private final ImportanceSums importance;          // null unless asked for
    private final MumoeGateStats gates;               // a μMoE adapter's gate mass, or null

    private CalibrationStats(LayerRouterStats[][] router, ExpertActivationStats[] activations,
                             ExpertSaliencyStats[] saliency, ImportanceSums importance, MumoeGateStats gates) {
        this.gates = gates;
        this.router = router;
        this.activations = activations;
        this.saliency = saliency;
        this.importance = importance;
    }

    /**
     * The empty aggregate for {@code files} input files and the MoE layers of a model with this config, routing
     * top-{@code topK} (built from config.json alone, so the driver need not load the weights).
     */
    public static CalibrationStats empty(int files, ModelConfig config, int topK) {
        return empty(files, config, topK, false);
    }

    /**
     * {@link #empty(int, ModelConfig, int)}, with {@code importance}: also every linear layer's importance sums
     * ({@link ImportanceSums}; the forward pass must then show its inputs to {@link #linearInputs()}).
     */
    public static CalibrationStats empty(int files, ModelConfig config, int topK, boolean importance) {
        return empty(files, config, topK, importance, null);
    }

    /**
     * {@link #empty(int, ModelConfig, int, boolean)}, with {@code gates} (empty, or null for none): the gate mass of a
     * μMoE adapter's terms, which the forward pass shows to {@link #linearInputs(int)}.
     */
    public static CalibrationStats empty(int files, ModelConfig config, int topK, boolean importance,
                                         MumoeGateStats gates) {
        if (gates != null && gates.files() != files) {
            throw new IllegalArgumentException("μMoE gate statistics for " + gates.files() + " files, calibrating "
                    + files);
        }
        int[] layers = moeLayerIndices(config);
        if (layers.length == 0) {
            throw new IllegalArgumentException("the model has no MoE layer to calibrate");
        }
        LayerRouterStats[][] router = new LayerRouterStats[files][layers.length];
        ExpertActivationStats[] activations = new ExpertActivationStats[layers.length];
        ExpertSaliencyStats[] saliency = new ExpertSaliencyStats[layers.length];
        for (int l = 0; l < layers.length; l++) {
            for (int f = 0; f < files; f++) {
                router[f][l] = new LayerRouterStats(config.num_experts, topK,
                        config.routing.scoring_func().equals("sigmoid"),
                        config.routing.groupLimited() ? config.routing.n_group() : 1,
                        config.routing.scoreCorrectionBias());
            }
            activations[l] = new ExpertActivationStats(config.num_experts, config.hidden_size,
                    config.expert_intermediate_size);
            saliency[l] = new ExpertSaliencyStats(config.num_experts);
        }
        return new CalibrationStats(router, activations, saliency,
                importance ? new ImportanceSums(config.num_hidden_layers) : null, gates);
    }

    /** What {@code model.forward} shows decoder layer i's inputs to: the importance sums, or nobody. */
    public IntFunction<LinearInputs> linearInputs() {
        return importance == null ? layer -> LinearInputs.NONE : importance::at;
    }

    /**
     * What {@code model.forward} over text of input file {@code file} shows decoder layer i's inputs to: the
     * importance sums ({@link #linearInputs()}) and the μMoE gate mass, when collected.
     */
    public IntFunction<LinearInputs> linearInputs(int file) {
        IntFunction<LinearInputs> inputs = linearInputs();
        if (gates == null) {
            return inputs;
        }
        return layer -> new LinearInputs() {
            private final LinearInputs importanceSums = inputs.apply(layer);

            @Override
            public void add(Site site, INDArray rows) {
                importanceSums.add(site, rows);
            }

            @Override
            public boolean wants(Site site) {
                return importanceSums.wants(site);
            }

            @Override
            public void termGates(AdapterTerms.Site site, List<INDArray> levels) {
                gates.add(file, new AdapterTerms.Key(layer, site), levels);
            }
        };
    }

    /** The μMoE adapter's gate mass per file and site, or null when not collected. */
    public MumoeGateStats gates() {
        return gates;
    }

    /** The importance sums, or null when not collected. */
    public ImportanceSums importance() {
        return importance;
    }

    /** Decoder-layer indices of the MoE layers, in order. */
    public static int[] moeLayerIndices(ModelConfig config) {
        return java.util.stream.IntStream.range(0, config.num_hidden_layers).filter(config::isMoeLayer).toArray();
    }

    /** The model's MoE blocks in layer order. */
    public static List<MoeBlock> moeBlocks(MoeTransformer model) {
        List<MoeBlock> blocks = new ArrayList<>();
        for (DecoderLayer layer : model.layers()) {
            if (layer.isMoe()) {
                blocks.add(layer.moe());
            }
        }
        return blocks;
    }

    /** The stacked weights of a block's full experts; refuses a layer of low-rank experts. */
    private static ExpertWeights expertWeights(MoeBlock block) {
        if (block.experts() instanceof FullExperts full) {
            return full.weights();
        }
        throw new IllegalArgumentException("this MoE layer holds " + (block.experts() instanceof CpExperts
                ? "CP-form experts" : block.experts() instanceof TrExperts ? "TR-form experts"
                : "a shared base and low-rank experts") + " (surgery lowrank), not the per-expert weights calibration "
                + "runs tokens through");
    }

    /**
     * Adds MoE layer {@code l}'s share of one forward pass over text of input file {@code file}: a whole-model pass
     * adds each layer as {@link MoeTransformer#moeLayerPass} shows it, a layer-sequential pass one layer at a time
     * (exact sums: merging the layers' aggregates gives the same bits). With importance sums, the block's own (its
     * router's, experts' and shared expert's inputs); the attention's and the dense layers' are what the layer's
     * forward shows {@link #linearInputs()}.
     *
     * @param l      the MoE layer (0-based among the MoE layers)
     * @param layer  its decoder layer
     * @param input  the block's input, norm2(h) [T, D]
     * @param logits the router's logits of {@code input} [T, E] ({@code block.router().logits(input)})
     * @param block  the layer's MoE block
     * @param routed the block's routed rows at this aggregate's top-K, as its forward computed them; null: computed
     *               here the same way (a layer-sequential pass, which runs the experts in groups elsewhere)
     * @param allExperts activation statistics over every token for every expert (saliency stays over the routed
     *                   tokens, as REAP and EAN are defined)
     */
    public CalibrationStats addLayer(int file, int l, int layer, INDArray input, INDArray logits, MoeBlock block,
                                     FullExperts.RoutedRows routed, boolean allExperts) {
        LayerRouterStats stats = router[file][l];
        Router.Ranking[] rankings = block.router().rank(logits, block.options().rule().withTopK(stats.topK()));
        stats.add(logits, rankings);
        ExpertWeights weights = expertWeights(block);
        FullExperts.RoutedRows rows = routed != null ? routed : ((FullExperts) block.experts()).routedRows(input,
                block.router().route(logits, block.options().rule().withTopK(stats.topK())));
        if (rows.routes().plan.rows() != rankings.length * stats.topK()) {
            throw new IllegalArgumentException("the routed rows hold " + rows.routes().plan.rows() + " rows, top-"
                    + stats.topK() + " of " + rankings.length + " tokens needs " + rankings.length * stats.topK());
        }
        ExpertActivationStats.Seen seen = importance == null ? null
                : (e, x, h) -> importance.addExpert(layer, weights.experts(), e, x, weights.hidden(), h,
                        weights.intermediate());
        if (allExperts) {
            activations[l].addEveryToken(input, (FullExperts) block.experts(), seen);
        } else {
            activations[l].add(rows, seen);
        }
        if (importance != null) {
            addSharedInputs(layer, input, block);
        }
        saliency[l].add(rows);
        if (routed == null) {
            rows.release();
        }
        return this;
    }

    /** The router's and the shared expert's input x [T, D], and the shared expert's intermediate activation [T, S]. */
    private void addSharedInputs(int layer, INDArray x, MoeBlock block) {
        importance.add(layer, LinearInputs.Site.FFN_IN, x);
        if (block.shared() != null) {
            ExpertWeights shared = block.shared().weights();
            importance.add(layer, LinearInputs.Site.SHARED_INTER, Activations.gated(shared.activation(),
                    Dense.linear(x, shared.w1().matrix(0)), Dense.linear(x, shared.w3().matrix(0)), Workers.SERIAL));
        }
    }

    /** this += other (exact, order-independent). */
    public CalibrationStats merge(CalibrationStats other) {
        if (other.router.length != router.length || other.activations.length != activations.length) {
            throw new IllegalArgumentException("merging calibration statistics of a different shape");
        }
        for (int f = 0; f < router.length; f++) {
            for (int l = 0; l < activations.length; l++) {
                router[f][l].merge(other.router[f][l]);
            }
        }
        for (int l = 0; l < activations.length; l++) {
            activations[l].merge(other.activations[l]);
            saliency[l].merge(other.saliency[l]);
        }
        if ((importance == null) != (other.importance == null)) {
            throw new IllegalArgumentException("merging calibration statistics with and without importance sums");
        }
        if (importance != null) {
            importance.merge(other.importance);
        }
        if ((gates == null) != (other.gates == null)) {
            throw new IllegalArgumentException("merging calibration statistics with and without μMoE gate mass");
        }
        if (gates != null) {
            gates.merge(other.gates);
        }
        return this;
    }

    public int files() {
        return router.length;
    }

    public int moeLayers() {
        return activations.length;
    }

    /** Statistics of MoE layer {@code l} (its position among the MoE layers) over input file {@code file}. */
    public LayerRouterStats file(int file, int l) {
        return router[file][l];
    }

    /** Statistics of MoE layer {@code l} over every file (a fresh merge of the per-file ones). */
    public LayerRouterStats layer(int l) {
        LayerRouterStats total = router[0][l].emptyLike();
        for (LayerRouterStats[] perFile : router) {
            total.merge(perFile[l]);
        }
        return total;
    }

    public ExpertActivationStats activations(int l) {
        return activations[l];
    }

    /** REAP and EAN sums of MoE layer {@code l}, over its routed tokens. */
    public ExpertSaliencyStats saliency(int l) {
        return saliency[l];
    }

    public boolean sameAs(CalibrationStats other) {
        if (other.router.length != router.length || other.activations.length != activations.length) {
            return false;
        }
        for (int f = 0; f < router.length; f++) {
            for (int l = 0; l < activations.length; l++) {
                if (!router[f][l].sameAs(other.router[f][l])) {
                    return false;
                }
            }
        }
        for (int l = 0; l < activations.length; l++) {
            if (!activations[l].sameAs(other.activations[l]) || !saliency[l].sameAs(other.saliency[l])) {
                return false;
            }
        }
        boolean sameGates = gates == null ? other.gates == null : other.gates != null && gates.sameAs(other.gates);
        return sameGates && (importance == null ? other.importance == null
                : other.importance != null && importance.sameAs(other.importance));
    }
}
