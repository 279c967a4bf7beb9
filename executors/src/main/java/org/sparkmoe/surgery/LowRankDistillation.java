package org.sparkmoe.surgery;

import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.indexing.NDArrayIndex;
import org.sparkmoe.io.CheckpointLayout;
import org.sparkmoe.io.CheckpointLayout.CpFactor;
import org.sparkmoe.io.CheckpointLayout.Projection;
import org.sparkmoe.io.CheckpointLayout.TrCore;
import org.sparkmoe.io.FusedExperts;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.io.TensorSource;
import org.sparkmoe.kernels.GatedActivation;
import org.sparkmoe.kernels.GroupedGemm;
import org.sparkmoe.kernels.Nd4jGroupedGemm;
import org.sparkmoe.experts.CpExperts;
import org.sparkmoe.experts.CpFactors;
import org.sparkmoe.experts.ExpertFfn;
import org.sparkmoe.experts.ExpertGradients;
import org.sparkmoe.experts.ExpertWeights;
import org.sparkmoe.experts.FullExperts;
import org.sparkmoe.experts.LowRankAdapters;
import org.sparkmoe.experts.LowRankFactorised;
import org.sparkmoe.experts.LowRankWeights;
import org.sparkmoe.experts.TrExperts;
import org.sparkmoe.experts.TrFactors;
import org.sparkmoe.moe.MoeBlock;
import org.sparkmoe.routing.Router;
import org.sparkmoe.routing.RouterOptions;
import org.sparkmoe.routing.RoutingRule;
import org.sparkmoe.train.AdamW;
import org.sparkmoe.train.LrSchedule;
import org.sparkmoe.train.Seeds;
import org.sparkmoe.train.TrainState;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;

/**
 * Layer-wise distillation of one low-rank MoE layer (the output of {@link LowRankSurgery}, {@link LowRankCpSurgery} or
 * {@link LowRankTrSurgery})
 * towards the original MoE layer: on the original layer's calibration inputs X [T, D], the targets are the original
 * layer's outputs Y = MoE(X) [T, D]; the layer's factors are trained with AdamW to minimise {@link DistillLoss}
 * (relative squared error) of the converted layer, whose router stays frozen. What is trained depends on the form
 * ({@link Student}): the svd form's E LoRA experts (A and B of w1, w3, w2; the shared base frozen), the cp form's CP
 * factors (U_N, U_I, U_O of w1, w3, w2: all its expert parameters), the tr form's TR cores (G_N, G_I, G_O of w1, w3,
 * w2: likewise all). One layer at a time and independent of every
 * other layer, so each can be its own Spark task. Float32; deterministic (the minibatches come from a seed derived
 * from the root seed and the layer).
 */
public final class LowRankDistillation {
    /** Tokens per forward pass when measuring the error over all calibration tokens. */
    public static final int EVAL_CHUNK = 4096;
    private static final Projection[] ORDER = {Projection.GATE, Projection.UP, Projection.DOWN};

    private LowRankDistillation() {
    }

    /**
     * The tensors {@link #distill} trains, by name, in order, taken from {@code distilled} (a layer's result in either
     * form): the svd form's stacked LoRA factors, the cp form's factors or the tr form's cores.
     */
    public static LinkedHashMap<String, INDArray> trainedTensors(ModelConfig config, int layer, LayerResult distilled) {
        LinkedHashMap<String, INDArray> out = new LinkedHashMap<>();
        for (String name : Student.trained(new CheckpointLayout(config.modelType), layer, distilled)) {
            out.put(name, distilled.tensors().get(name));
        }
        return out;
    }

    /**
     * @param original the original checkpoint (full experts)
     * @param layer    decoder layer index
     * @param lowRank  {@link LowRankSurgery}'s result for this layer (shared bases and stacked LoRA factors) or
     *                 {@link LowRankCpSurgery}'s (CP factors) or {@link LowRankTrSurgery}'s (TR cores)
     * @param x        [T, D] the original model's inputs to this layer's MoE block on calibration text
     * @return the same tensors with the trained factors, and the metrics plus {@code distill_rel_mse_before},
     *         {@code _trained} and {@code _after} (the relative squared error over all T tokens of the starting, the
     *         trained and the returned factors), {@code distill_kept_start} and {@code distill_tokens}. Training that
     *         ends with a larger error than it started with (a learning rate too high for the rank, say) is dropped:
     *         the layer keeps its starting factors ({@code distill_kept_start} 1, {@code _after} = {@code _before}).
     */
    public static LayerResult distill(TensorSource original, ModelConfig config, int layer, LayerResult lowRank,
            INDArray x, DistillOptions opts) {
        CheckpointLayout layout = new CheckpointLayout(config.modelType);
        GroupedGemm gemm = new Nd4jGroupedGemm();
        Router gate = router(original, config, layout, layer);                               // [E, D] (+ bias)
        INDArray xs = x.castTo(DataType.FLOAT).dup('c');                                      // [T, D]
        INDArray y = teacher(original, config, layer, gate, xs, gemm);                        // [T, D]
        Student l = Student.of(layout, layer, lowRank, gate, routing(config), gemm);
        LinkedHashMap<String, INDArray> params = new LinkedHashMap<>();
        for (String name : l.trained()) {
            params.put(name, lowRank.tensors().get(name).dup('c'));
        }
        TrainState state = TrainState.fresh(params);
        double before = relativeError(l.block(state), xs, y);

        AdamW adamW = new AdamW(0.9, 0.999, 1e-8, opts.weightDecay());
        LrSchedule schedule = new LrSchedule(opts.lr(), opts.warmup(), opts.steps());
        Batches batches = new Batches((int) xs.size(0), Math.min(opts.batchTokens(), (int) xs.size(0)),
                Seeds.derive(opts.seed(), "distill/layer/" + layer));
        for (int step = 0; step < opts.steps(); step++) {
            int[] rows = batches.next();
            INDArray xb = Nd4j.pullRows(xs, 1, rows);                                         // [B, D]
            INDArray yb = Nd4j.pullRows(y, 1, rows);                                          // [B, D]
            ExpertGradients g = DistillLoss.gradient(l.block(state), xb, yb).grads();
            adamW.update(state, l.keyed(g), schedule.at(state.step()));
        }
        double trained = relativeError(l.block(state), xs, y);
        boolean keepStart = !(trained <= before);   // training that ends worse (or not finite) is dropped

        LinkedHashMap<String, INDArray> tensors = new LinkedHashMap<>(lowRank.tensors());
        if (!keepStart) {
            tensors.putAll(state.params());
        }
        LinkedHashMap<String, Double> metrics = new LinkedHashMap<>(lowRank.metrics());
        metrics.put("distill_rel_mse_before", before);
        metrics.put("distill_rel_mse_trained", trained);
        metrics.put("distill_rel_mse_after", keepStart ? before : trained);
        metrics.put("distill_kept_start", keepStart ? 1.0 : 0.0);
        metrics.put("distill_tokens", (double) xs.size(0));
        return new LayerResult(tensors, lowRank.groups(), metrics);
    }

    /**
     * The original MoE layer's output on x: its router and full experts read from the checkpoint.
     *
     * @param gate the router: [E, D] and its correction bias
     * @param x    [T, D]
     * @return [T, D]
     */
    static INDArray teacher(TensorSource original, ModelConfig config, int layer, Router gate, INDArray x,
            GroupedGemm gemm) {
        CheckpointLayout layout = new CheckpointLayout(config.modelType);
        ExpertWeights experts = new ExpertWeights(   // as stored, widened per tile by the products
                ExpertStack.of(original, layout, layer, config.num_experts, Projection.GATE).weights(),   // E × [I, D]
                ExpertStack.of(original, layout, layer, config.num_experts, Projection.UP).weights(),     // E × [I, D]
                ExpertStack.of(original, layout, layer, config.num_experts, Projection.DOWN).weights());  // E × [D, I]
        if (config.clamped_experts) {   // gpt-oss
            experts = new ExpertWeights(experts.w1(), experts.w3(), experts.w2(),
                    biases(original, layout, layer, config.num_experts, Projection.GATE),         // [E, I]
                    biases(original, layout, layer, config.num_experts, Projection.UP),           // [E, I]
                    biases(original, layout, layer, config.num_experts, Projection.DOWN),         // [E, D]
                    GatedActivation.CLAMPED_SWIGLU);
        }
        MoeBlock block = new MoeBlock(gate, routing(config), new FullExperts(experts, gemm), null);
        INDArray y = Nd4j.createUninitialized(DataType.FLOAT, x.shape(), 'c');
        for (long from = 0; from < x.size(0); from += EVAL_CHUNK) {
            long to = Math.min(x.size(0), from + EVAL_CHUNK);
            y.get(NDArrayIndex.interval(from, to), NDArrayIndex.all())
                    .assign(block.forward(rows(x, from, to), config.num_experts_per_tok).hidden());
        }
        return y;
    }

    private static INDArray biases(TensorSource original, CheckpointLayout layout, int layer, int experts,
            Projection p) {
        return ExpertStack.readBiases(original, layout, layer, experts, p).reshape(experts, -1);
    }

    /**
     * The original router of {@code layer}: its gate [E, D], gpt-oss's bias [E] and, for sigmoid routers, its
     * selection-only correction bias (the shared expert, the same in teacher and student, is left out of both).
     */
    static Router router(TensorSource original, ModelConfig config, CheckpointLayout layout, int layer) {
        INDArray gate = original.readFloat(layout.routerGate(layer));                          // [E, D]
        return new Router(gate, config.clamped_experts ? original.readFloat(layout.routerBias(layer)) : null,
                config.routing.scoreCorrectionBias()
                ? original.readFloat(layout.scoreCorrectionBias(layer)).castTo(DataType.DOUBLE).toDoubleVector() : null);
    }

    /** The model's routing as config.json says; the router frozen. */
    private static RouterOptions routing(ModelConfig config) {
        return RouterOptions.of(RoutingRule.of(config));
    }

    /** Σ‖ŷ − y‖² / Σ‖y‖² over every token, in chunks. */
    static double relativeError(MoeBlock student, INDArray x, INDArray y) {
        double err = 0;
        double norm = 0;
        for (long from = 0; from < x.size(0); from += EVAL_CHUNK) {
            long to = Math.min(x.size(0), from + EVAL_CHUNK);
            INDArray yc = rows(y, from, to);
            err += DistillLoss.squaredNorm(student.forward(rows(x, from, to)).out().sub(yc));
            norm += DistillLoss.squaredNorm(yc);
        }
        return err / norm;
    }

    private static INDArray rows(INDArray a, long from, long to) {
        return a.get(NDArrayIndex.interval(from, to), NDArrayIndex.all()).dup('c');
    }

    /** The converted layer as a student: the tensors it trains, the block over a state of them, their gradients. */
    private sealed interface Student permits SvdStudent, FactorStudent {
        /** The student of {@code lowRank}'s form: CP factors present, the cp form; TR cores, the tr form; else svd. */
        static Student of(CheckpointLayout layout, int layer, LayerResult lowRank, Router gate, RouterOptions routing,
                GroupedGemm gemm) {
            FactorForm form = form(layout, layer, lowRank);
            return form != null ? new FactorStudent(form, layout, layer, gate, routing, gemm)
                    : new SvdStudent(layout, layer, lowRank, gate, routing, gemm);
        }

        /** The cp form when CP factors are present, the tr form when TR cores are; null for the svd form. */
        static FactorForm form(CheckpointLayout layout, int layer, LayerResult lowRank) {
            for (FactorForm form : FactorForm.values()) {
                if (lowRank.tensors().containsKey(form.name(layout, layer, Projection.GATE, 0))) {
                    return form;
                }
            }
            return null;
        }

        static List<String> trained(CheckpointLayout layout, int layer, LayerResult lowRank) {
            FactorForm form = form(layout, layer, lowRank);
            return form != null ? FactorStudent.names(form, layout, layer) : SvdStudent.names(layout, layer);
        }

        /** The trained tensors' names, in the state's order. */
        List<String> trained();

        /** The student: the frozen router with the state's factors. */
        MoeBlock block(TrainState state);

        /** The factors' gradients under the state's keys, in its order. */
        LinkedHashMap<String, INDArray> keyed(ExpertGradients g);
    }

    /** The svd form: the E LoRA experts trained, the shared base (and gpt-oss's biases) frozen. */
    private record SvdStudent(CheckpointLayout layout, int layer, LayerResult lowRank, Router gate,
                              RouterOptions routing, GroupedGemm gemm) implements Student {
        static List<String> names(CheckpointLayout layout, int layer) {
            List<String> out = new ArrayList<>();
            for (Projection p : ORDER) {
                out.add(layout.stackedLoraA(layer, p));
                out.add(layout.stackedLoraB(layer, p));
            }
            return out;
        }

        @Override
        public List<String> trained() {
            return names(layout, layer);
        }

        @Override
        public MoeBlock block(TrainState state) {
            LinkedHashMap<String, INDArray> p = state.params();
            LowRankAdapters adapters = new LowRankAdapters(
                    p.get(layout.stackedLoraA(layer, Projection.GATE)), p.get(layout.stackedLoraB(layer, Projection.GATE)),
                    p.get(layout.stackedLoraA(layer, Projection.UP)), p.get(layout.stackedLoraB(layer, Projection.UP)),
                    p.get(layout.stackedLoraA(layer, Projection.DOWN)), p.get(layout.stackedLoraB(layer, Projection.DOWN)),
                    1.0);
            LowRankWeights weights = new LowRankWeights(base(Projection.GATE), base(Projection.UP),
                    base(Projection.DOWN), adapters);
            Map<String, INDArray> t = lowRank.tensors();
            if (t.containsKey(FusedExperts.gateUpBias(layer))) {   // gpt-oss
                weights = weights.withInterleavedBiases(t.get(FusedExperts.gateUpBias(layer)),
                        t.get(FusedExperts.downBias(layer)));
            }
            return new MoeBlock(gate, routing, new LowRankFactorised(weights, gemm), null);
        }

        private INDArray base(Projection p) {
            return lowRank.tensors().get(layout.sharedBase(layer, p));
        }

        @Override
        public LinkedHashMap<String, INDArray> keyed(ExpertGradients g) {
            LinkedHashMap<String, INDArray> out = new LinkedHashMap<>();
            out.put(layout.stackedLoraA(layer, Projection.GATE), g.gate().dA());
            out.put(layout.stackedLoraB(layer, Projection.GATE), g.gate().dB());
            out.put(layout.stackedLoraA(layer, Projection.UP), g.up().dA());
            out.put(layout.stackedLoraB(layer, Projection.UP), g.up().dB());
            out.put(layout.stackedLoraA(layer, Projection.DOWN), g.down().dA());
            out.put(layout.stackedLoraB(layer, Projection.DOWN), g.down().dB());
            return out;
        }
    }

    /**
     * The cp and tr forms: all three tensors of each projection trained (CP factors U_N, U_I, U_O or TR cores G_N,
     * G_I, G_O of w1, w3, w2), nothing else in the experts; {@link FactorForm} says which.
     */
    private record FactorStudent(FactorForm form, CheckpointLayout layout, int layer, Router gate,
                                 RouterOptions routing, GroupedGemm gemm) implements Student {
        static List<String> names(FactorForm form, CheckpointLayout layout, int layer) {
            List<String> out = new ArrayList<>();
            for (Projection p : ORDER) {
                for (int k = 0; k < 3; k++) {
                    out.add(form.name(layout, layer, p, k));
                }
            }
            return out;
        }

        @Override
        public List<String> trained() {
            return names(form, layout, layer);
        }

        @Override
        public MoeBlock block(TrainState state) {
            INDArray[][] t = new INDArray[ORDER.length][3];                                  // [w1, w3, w2][N, I, O]
            for (int i = 0; i < ORDER.length; i++) {
                for (int k = 0; k < 3; k++) {
                    t[i][k] = state.params().get(form.name(layout, layer, ORDER[i], k));
                }
            }
            return new MoeBlock(gate, routing, form.experts(t, gemm), null);
        }

        @Override
        public LinkedHashMap<String, INDArray> keyed(ExpertGradients g) {
            INDArray[][] grads = form.gradients(g);                                          // [w1, w3, w2][N, I, O]
            LinkedHashMap<String, INDArray> out = new LinkedHashMap<>();
            for (int i = 0; i < ORDER.length; i++) {
                for (int k = 0; k < 3; k++) {
                    out.put(form.name(layout, layer, ORDER[i], k), grads[i][k]);
                }
            }
            return out;
        }
    }

    /** What the cp and tr forms' students differ in; k = 0, 1, 2 is the expert, input and output factor or core. */
    private enum FactorForm {
        /** U_N [E, R], U_I [in, R], U_O [out, R]. */
        CP {
            @Override
            String name(CheckpointLayout layout, int layer, Projection p, int k) {
                return layout.cpFactor(layer, p, CpFactor.values()[k]);
            }

            @Override
            ExpertFfn experts(INDArray[][] t, GroupedGemm gemm) {
                return new CpExperts(new CpFactors(t[0][0], t[0][1], t[0][2]),
                        new CpFactors(t[1][0], t[1][1], t[1][2]), new CpFactors(t[2][0], t[2][1], t[2][2]), gemm);
            }

            @Override
            INDArray[][] gradients(ExpertGradients g) {
                CpFactors w1 = g.cp().gate(), w3 = g.cp().up(), w2 = g.cp().down();
                return new INDArray[][] {{w1.experts(), w1.in(), w1.out()}, {w3.experts(), w3.in(), w3.out()},
                        {w2.experts(), w2.in(), w2.out()}};
            }
        },
        /** G_N [r1, E, r2], G_I [r2, in, r3], G_O [r3, out, r1]. */
        TR {
            @Override
            String name(CheckpointLayout layout, int layer, Projection p, int k) {
                return layout.trCore(layer, p, TrCore.values()[k]);
            }

            @Override
            ExpertFfn experts(INDArray[][] t, GroupedGemm gemm) {
                return new TrExperts(new TrFactors(t[0][0], t[0][1], t[0][2]),
                        new TrFactors(t[1][0], t[1][1], t[1][2]), new TrFactors(t[2][0], t[2][1], t[2][2]), gemm);
            }

            @Override
            INDArray[][] gradients(ExpertGradients g) {
                TrFactors w1 = g.tr().gate(), w3 = g.tr().up(), w2 = g.tr().down();
                return new INDArray[][] {{w1.experts(), w1.in(), w1.out()}, {w3.experts(), w3.in(), w3.out()},
                        {w2.experts(), w2.in(), w2.out()}};
            }
        };

        /** The k-th tensor's name of projection p in the layer. */
        abstract String name(CheckpointLayout layout, int layer, Projection p, int k);

        /** The experts of the tensors t [w1, w3, w2][k]. */
        abstract ExpertFfn experts(INDArray[][] t, GroupedGemm gemm);

        /** The gradients as [w1, w3, w2][k]. */
        abstract INDArray[][] gradients(ExpertGradients g);
    }

    /** Minibatches of token rows: a seeded shuffle of all rows, consumed in order and reshuffled when exhausted. */
    private static final class Batches {
        private final SplittableRandom random;
        private final int[] order;
        private final int size;
        private int next;

        Batches(int tokens, int size, long seed) {
            this.random = new SplittableRandom(seed);
            this.order = new int[tokens];
            for (int i = 0; i < tokens; i++) {
                order[i] = i;
            }
            this.size = size;
            shuffle();
        }

        int[] next() {
            if (next + size > order.length) {
                shuffle();
            }
            int[] rows = Arrays.copyOfRange(order, next, next + size);
            next += size;
            return rows;
        }

        private void shuffle() {
            for (int i = order.length - 1; i > 0; i--) {
                int j = random.nextInt(i + 1);
                int t = order[i];
                order[i] = order[j];
                order[j] = t;
            }
            next = 0;
        }
    }
}
