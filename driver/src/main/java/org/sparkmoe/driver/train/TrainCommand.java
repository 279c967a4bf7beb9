package org.sparkmoe.driver.train;

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.Path;
import org.apache.spark.api.java.JavaSparkContext;
import org.sparkmoe.adapter.MumoeAdapter;
import org.sparkmoe.adapter.MumoeConfig;
import org.sparkmoe.adapter.PeftAdapter;
import org.sparkmoe.mumoe.GateActivation;
import org.sparkmoe.mumoe.MumoeForm;
import org.sparkmoe.io.ExpertLayout;
import org.sparkmoe.driver.OutputFolder;
import org.sparkmoe.driver.Paths;
import org.sparkmoe.driver.SparkContexts;
import org.sparkmoe.driver.DataOptions;
import org.sparkmoe.driver.DeviceOptions;
import org.sparkmoe.driver.DryRunOption;
import org.sparkmoe.driver.GpuMemoryPlan;
import org.sparkmoe.driver.MemoryPlan;
import org.sparkmoe.driver.SparkLimits;
import org.sparkmoe.driver.OutputLock;
import org.sparkmoe.driver.ModelOption;
import org.sparkmoe.driver.WindowOption;
import org.sparkmoe.kernels.Device;
import org.sparkmoe.train.TrainOptions;
import org.sparkmoe.driver.SparkOptions;
import org.sparkmoe.io.Checkpoint;
import org.sparkmoe.text.Tokenizers;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.train.TrainStep;
import org.sparkmoe.model.ModelFolder;
import org.sparkmoe.model.ModelSchema;
import org.sparkmoe.io.CheckpointLayout.Projection;
import org.sparkmoe.train.LoraSpec;
import org.sparkmoe.train.TrainState;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Spec;

import java.util.EnumSet;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.Callable;

/** {@code sparkmoe train}: validates options, plans, runs {@link TrainJob}, writes the adapter. */
@Command(name = "train", mixinStandardHelpOptions = true, sortOptions = false,
        description = {"LoRA fine-tuning of the experts (and optionally the routers) of an MoE model, as a Spark job.",
                "Windows are dealt to the partitions; every round each partition takes --averaging-frequency AdamW "
                        + "steps on its own windows, then the trainable tensors and moments are averaged (weighted by "
                        + "windows); with --averaging gradients the partitions' gradients are averaged instead and one "
                        + "AdamW step is taken on their mean. Loss: causal-LM cross-entropy plus the router "
                        + "load-balancing loss. Writes OUT/adapter (PEFT), OUT/train-log.jsonl, OUT/checkpoints and, "
                        + "with --merge, OUT/merged.",
                "A low-rank model (from 'surgery lowrank') trains its own stacked LoRA experts end to end, starting "
                        + "from the checkpoint's (all of w1, w3, w2 at the model's rank, scale 1: --rank and --alpha "
                        + "default to the model's rank, and other values are refused), and writes OUT/model, a checkpoint of the same format, instead of a PEFT adapter. A model of CP- or TR-form experts (--form cp|tr) trains only a μMoE adapter beside its frozen experts.",
                "--adapter mumoe-cp|mumoe-tr trains a μMoE adapter instead of LoRA: a multilinear mixture of "
                        + "--mumoe-experts soft-gated experts in CP or tensor-ring form beside each --mumoe-targets "
                        + "projection (y = W·x + μMoE(x)), written to OUT/adapter in SparkMoE's μMoE format "
                        + "(not PEFT). --mumoe-gate entmax15 gates them with entmax-1.5 (sparse, convex) instead of softmax."})
public final class TrainCommand implements Callable<Integer> {
    static final int DEFAULT_RANK = 8;
    static final double DEFAULT_ALPHA = 16;
    /** The options that only a LoRA run reads, and those that only a μMoE run reads. */
    private static final List<String> LORA_ONLY = List.of("--rank", "--alpha", "--targets", "--train-router",
            "--shared-expert-lora", "--adapter-format");
    private static final List<String> MUMOE_ONLY = List.of("--mumoe-experts", "--mumoe-rank", "--mumoe-targets",
            "--mumoe-gate");

    @Spec
    CommandSpec spec;

    @Mixin
    ModelOption model;

    @Mixin
    DataOptions data = new DataOptions("train");

    @Option(names = "--out", required = true, paramLabel = "DIR",
            description = "Output folder; must be empty unless --resume.")
    String out;

    @Option(names = "--base-model-name", paramLabel = "NAME",
            description = "The base_model_name_or_path OUT/adapter/adapter_config.json records. Default: --model (a "
                    + "local folder as a plain path). deploy/yarn/submit-cluster.sh passes the model folder you give it, "
                    + "since the job itself reads the copy YARN unpacks in each container.")
    String baseModelName;

    @Option(names = "--steps", defaultValue = "100", paramLabel = "N",
            description = "Optimiser steps (every partition takes each one). Default: ${DEFAULT-VALUE}.")
    long steps;

    @Option(names = "--batch-windows", defaultValue = "4", paramLabel = "B",
            description = "Windows per step and partition. Default: ${DEFAULT-VALUE}.")
    int batchWindows;

    @Mixin
    WindowOption window;

    @Option(names = "--averaging-frequency", defaultValue = "1", paramLabel = "F",
            description = "Local steps between parameter averagings (one round). Default: ${DEFAULT-VALUE}.")
    int averagingFrequency;

    @Option(names = "--averaging", defaultValue = "parameters", paramLabel = "parameters|gradients",
            description = "What a round averages: parameters (each partition takes --averaging-frequency AdamW steps "
                    + "on its own windows, then the trainable tensors and AdamW moments are averaged), or gradients "
                    + "(each partition computes its batch's gradients at the round's state and one AdamW step is "
                    + "taken on their mean, as DistributedDataParallel over P ranks would; needs "
                    + "--averaging-frequency 1). Default: ${DEFAULT-VALUE}.")
    String averaging;

    @Option(names = "--lr", defaultValue = "1e-3", paramLabel = "X",
            description = "Peak learning rate (linear warmup, then cosine decay to 0). Default: ${DEFAULT-VALUE}.")
    double lr;

    @Option(names = "--warmup", defaultValue = "0", paramLabel = "N",
            description = "Warmup steps. Default: ${DEFAULT-VALUE}.")
    long warmup;

    @Option(names = "--weight-decay", defaultValue = "0", paramLabel = "X",
            description = "AdamW's decoupled weight decay. Default: ${DEFAULT-VALUE}.")
    double weightDecay;

    @Option(names = "--max-grad-norm", defaultValue = "1.0", paramLabel = "X",
            description = "Global gradient-norm clip. Default: ${DEFAULT-VALUE}.")
    double maxGradNorm;

    @Option(names = "--adapter", defaultValue = "lora", paramLabel = "lora|mumoe-cp|mumoe-tr",
            description = "What is trained: LoRA on the experts, or a μMoE adapter (CP or tensor-ring factors and a "
                    + "gate, --mumoe-gate) beside each --mumoe-targets projection. Default: ${DEFAULT-VALUE}.")
    String adapter;

    @Option(names = "--mumoe-experts", defaultValue = "64", paramLabel = "N|N1,N2,...",
            description = "μMoE experts N per adapted projection, or N1,N2,... for a hierarchical μMoE of N1·N2·... "
                    + "experts with one gate per level. Default: ${DEFAULT-VALUE}.")
    String mumoeExperts;

    @Option(names = "--mumoe-rank", paramLabel = "R|r1,r2,...",
            description = "μMoE rank: CP R (default 8); tensor ring one rank per core of the ring, r1,r2,r3 for N "
                    + "experts and r1,...,r(L+2) for L levels N1,...,NL (default 4 for each).")
    String mumoeRank;

    @Option(names = "--mumoe-targets", defaultValue = "moe", paramLabel = "LIST",
            description = "Where μMoE adapters sit: q_proj,k_proj,v_proj,o_proj (every layer's attention), moe "
                    + "(beside every MoE block's output) and mlp (beside every dense layer's MLP). Default: "
                    + "${DEFAULT-VALUE}.")
    String mumoeTargets;

    @Option(names = "--mumoe-gate", defaultValue = "softmax", paramLabel = "softmax|entmax15",
            description = "μMoE gate of each level: softmax, or entmax15, entmax-1.5 (Peters et al., ACL 2019), the "
                    + "μMoE paper's gate (Oldfield et al., NeurIPS 2024): sparse, convex expert weights, many "
                    + "exactly 0. Written in adapter_config.json. Default: ${DEFAULT-VALUE}.")
    String mumoeGate;

    @Option(names = "--rank", paramLabel = "R",
            description = "LoRA rank. Default: " + DEFAULT_RANK + "; a low-rank model's own rank (another value is "
                    + "refused).")
    Integer rank;

    @Option(names = "--alpha", paramLabel = "A",
            description = "lora_alpha; the update is scaled by alpha/rank. Default: " + DEFAULT_ALPHA + "; a low-rank "
                    + "model's own rank, i.e. scale 1 (another value is refused).")
    Double alpha;

    @Option(names = "--targets", defaultValue = "w1,w2,w3", split = ",", paramLabel = "P",
            converter = ProjectionConverter.class,
            description = "Expert projections to adapt: w1,w2,w3 (Qwen names gate_proj,up_proj,down_proj accepted). "
                    + "Default: ${DEFAULT-VALUE}.")
    List<Projection> targets;

    @Option(names = "--train-router", description = "Train the router (gate) weights too (saved as PEFT modules_to_save).")
    boolean trainRouter;

    @Option(names = "--shared-expert-lora", description = "LoRA on the shared expert too (qwen2_moe's "
            + "mlp.shared_expert, glm4_moe's mlp.shared_experts): the --targets projections at the same --rank and "
            + "--alpha, written into the PEFT adapter beside the experts' (per-expert format only).")
    boolean sharedExpertLora;

    @Option(names = "--aux-loss-coef", paramLabel = "X",
            description = "Weight of the load-balancing loss. Default: config.json's router_aux_loss_coef.")
    Double auxLossCoef;

    @Option(names = "--checkpoint-activations", description = "Keep only each decoder layer's input during the "
            + "forward and recompute the layer's forward in the backward: activation memory of one layer plus the "
            + "layer inputs instead of every layer's, for one more forward per step; the same bits (losses, adapter).")
    boolean checkpointActivations;

    @Option(names = "--checkpoint-every", defaultValue = "10", paramLabel = "N",
            description = "Checkpoint every N rounds (and after the last). Default: ${DEFAULT-VALUE}.")
    int checkpointEvery;

    @Option(names = "--resume", description = "Continue the run in --out from its latest checkpoint (same options).")
    boolean resume;

    @Option(names = "--adapter-format", defaultValue = "per-expert", paramLabel = "per-expert|fused",
            description = "How OUT/adapter stores the LoRA: one A/B pair per expert and projection (what vLLM and PEFT "
                    + "both load), or PEFT's fused-expert adapter on transformers 5's mlp.experts.gate_up_proj / "
                    + "down_proj (target_parameters, the shapes of PEFT >= 0.19.1, peft_version recorded). Fused holds "
                    + "gate and up in one LoRA of rank 2 x --rank (lora_alpha doubled, the same scale and the same "
                    + "weight deltas). Checkpoints stay per-expert. Default: ${DEFAULT-VALUE}.")
    String adapterFormat;

    @Option(names = "--merge", description = "Also write OUT/merged: the model with the LoRA merged into its experts (and shared expert).")
    boolean merge;

    @Option(names = "--seed", defaultValue = "42", paramLabel = "N",
            description = "Root seed of LoRA init and window order. Default: ${DEFAULT-VALUE}.")
    long seed;

    @Mixin
    SparkOptions spark;

    @Mixin
    DeviceOptions device;

    @Mixin
    DryRunOption dryRun;

    /** One --targets name as a projection; a name that is none of them is a bad flag (exit 2). */
    static final class ProjectionConverter implements CommandLine.ITypeConverter<Projection> {
        @Override
        public Projection convert(String value) {
            try {
                return LoraSpec.parseTargets(value).iterator().next();
            } catch (IllegalArgumentException e) {
                throw new CommandLine.TypeConversionException(e.getMessage());
            }
        }
    }

    @Override
    public Integer call() {
        Device chosen = device.resolve();
        ExpertLayout format = ExpertLayout.parse(adapterFormat, "--adapter-format");
        Configuration conf = new Configuration();
        String modelUri = model.uri(conf);
        ModelConfig config = checkModel(modelUri, conf);
        // a model of CP- or TR-form experts with a μMoE adapter trains the adapter beside them, as on full experts
        boolean mumoeOnCpOrTr = (config.hasCpExperts() || config.hasTrExperts()) && !adapter.equals("lora");
        boolean lowRank = config.hasLowRankExperts() && !mumoeOnCpOrTr;
        if (lowRank && format == ExpertLayout.FUSED) {
            throw new IllegalArgumentException("--adapter-format fused does not apply to a low-rank model (surgery "
                    + "lowrank): train writes the trained model to OUT/" + TrainOutputs.MODEL + ", no PEFT adapter");
        }
        if (lowRank) {
            checkLowRankOptions(config);
        }
        int r = lowRank ? config.low_rank_experts_rank : rank == null ? DEFAULT_RANK : rank;
        double a = lowRank ? config.low_rank_experts_rank : alpha == null ? DEFAULT_ALPHA : alpha;
        TrainPlan.Windows windows = new TrainPlan.Windows(data.files, data.textSplit(), window.window, batchWindows);
        TrainPlan.Rounds rounds = new TrainPlan.Rounds(steps, averagingFrequency, spark.partitionsOr(1),
                checkpointEvery, TrainPlan.Averaging.parse(averaging));
        MumoeConfig mumoe = mumoeConfig(config);
        TrainOptions options = TrainPlan.options(mumoe != null ? LoraSpec.mumoe(mumoe)
                        : TrainPlan.lora(targets, r, a, trainRouter, sharedExpertLora), lr,
                warmup, steps, weightDecay, maxGradNorm, auxLossCoef, seed)
                .withCheckpointActivations(checkpointActivations);
        TrainState.checkShared(config, options.lora());
        TrainStep.auxLossCoef(config, options);
        if (windows.window() > config.max_position_embeddings) {
            throw new IllegalArgumentException("--window " + windows.window() + " exceeds the model's "
                    + "max_position_embeddings " + config.max_position_embeddings);
        }
        windows = new TrainPlan.Windows(data.uris(conf), windows.split(), windows.window(), windows.batchWindows());
        TrainPlan checked = new TrainPlan(modelUri, windows, rounds, options, Paths.qualify(out, conf), merge, chosen);
        if (baseModelName != null && baseModelName.isBlank()) {
            throw new IllegalArgumentException("--base-model-name must name the base model, got '" + baseModelName
                    + "'");
        }
        String baseName = baseModelName != null ? baseModelName : checked.baseModelName();
        if (mumoe == null) {
            PeftAdapter.checkFormat(checked.adapterConfig(baseName), format);
        }
        if (sharedExpertLora) {
            System.err.println("train: note: PEFT 0.21 on transformers 5 drops the shared expert's LoRA from OUT/adapter "
                    + "(its MoE conversion maps gate_proj/up_proj/down_proj to the fused experts); sparkmoe eval, logits "
                    + "and merge apply it, and --merge writes a checkpoint transformers loads");
        }
        OutputFolder.requireCreatable("--out", new Path(checked.out()), conf);
        TrainState initial = TrainJob.initialState(checked, conf); // the size of any state the run will hold
        SparkLimits limits = SparkLimits.of(SparkContexts.conf("sparkmoe train", spark.master), spark.partitions);
        MemoryPlan memory = MemoryPlan.of(MemoryPlan.Job.TRAIN, config, MemoryPlan.mappedBytes(modelUri, conf),
                windows.batchWindows(), windows.window(), initial.bytes(),
                checked.averagesGradients() ? initial.bytes() / 3 : initial.bytes(), checkpointActivations, mumoe,
                limits);
        if (dryRun.show(memory, chosen != Device.CUDA ? null : GpuMemoryPlan.of(config, windows.batchWindows(),
                windows.window(), mumoe != null || lowRank ? 0 : r, 0))) {
            return 0;
        }
        try (OutputLock lock = OutputLock.acquire(new Path(checked.out()), conf, "train");
             JavaSparkContext sc = SparkContexts.start("sparkmoe train", spark.master)) {
            TrainPlan plan = checked.withOptions(checked.options().withPassWorkspace(memory.passWorkspace()))
                    .withPartitions(spark.partitionsOr(sc.defaultParallelism()));
            TrainOutputs outputs = new TrainOutputs(plan, conf);
            outputs.removeStaleTemporaries();
            TrainOutputs.Resume from = resume ? outputs.resume() : null;
            TrainState state;
            long firstRound;
            if (from != null) {
                state = from.state();
                firstRound = from.nextRound();
                System.err.printf("train: resuming at round %d/%d (step %d)%n", firstRound + 1, plan.roundCount(),
                        state.step());
            } else {
                if (resume) {
                    System.err.println("train: --resume: no complete checkpoint under " + new Path(plan.out(),
                            "checkpoints") + " (the run stopped before its first); starting afresh");
                    outputs.clearUncheckpointed();
                }
                outputs.requireFresh();
                state = initial;
                firstRound = 0;
            }
            System.err.printf("train: %d steps in %d rounds of %d on %d partitions, %d windows of %d tokens per step "
                            + "and partition, %s averaged; trainable %d tensors, %.3f MB with moments%n", plan.steps(),
                    plan.roundCount(), plan.averagingFrequency(), plan.partitions(), plan.batchWindows(),
                    plan.window(), plan.rounds().averaging().id(), state.params().size(), state.bytes() / 1e6);
            double[] totals = new double[4]; // round s, averaging s, tokens, partition-seconds in local steps
            TrainState last;
            try {
                last = TrainJob.run(sc, plan, state, firstRound, (round, averaged) -> {
                    System.err.println(round.summary(plan.roundCount(), plan.steps()));
                    outputs.roundDone(round, averaged);
                    totals[0] += round.seconds();
                    totals[1] += round.averagingSeconds();
                    totals[2] += round.tokens();
                    totals[3] += round.computeSeconds() * round.partitions();
                });
            } catch (RuntimeException e) {
                try {
                    outputs.writeLog();     // the rounds done since the log was last written
                } catch (RuntimeException logFailure) {
                    e.addSuppressed(logFailure);
                }
                throw e;
            }
            System.err.printf(Locale.ROOT, "train: %.1f s in rounds, %.1f s (%.1f%%) of it averaging; %.0f tokens/s "
                    + "per partition in local steps%n", totals[0], totals[1], 100 * totals[1] / totals[0],
                    totals[2] / totals[3]);
            for (Path written : outputs.finish(config, last, format, baseName)) {
                System.err.println("train: wrote " + written);
            }
        }
        return 0;
    }

    /**
     * The μMoE adapter of --adapter mumoe-cp|mumoe-tr, --mumoe-experts, --mumoe-rank, --mumoe-targets, --mumoe-gate,
     * or null for
     * --adapter lora (where the μMoE flags are refused); LoRA's flags and --merge are refused beside a μMoE adapter.
     */
    private MumoeConfig mumoeConfig(ModelConfig config) {
        boolean lora = adapter.equals("lora");
        if (!lora && !adapter.equals("mumoe-cp") && !adapter.equals("mumoe-tr")) {
            throw new IllegalArgumentException("--adapter " + adapter + ": expected lora, mumoe-cp or mumoe-tr");
        }
        for (String option : lora ? MUMOE_ONLY : LORA_ONLY) {
            if (spec.commandLine().getParseResult().hasMatchedOption(option)) {
                throw new IllegalArgumentException(option + " applies to " + (lora
                        ? "--adapter mumoe-cp or mumoe-tr, not lora" : "--adapter lora, not " + adapter
                        + " (a μMoE adapter takes --mumoe-experts, --mumoe-rank, --mumoe-targets and --mumoe-gate)"));
            }
        }
        if (lora) {
            return null;
        }
        if (merge) {
            throw new IllegalArgumentException("--merge: " + MumoeAdapter.NOT_MERGEABLE);
        }
        MumoeForm form = adapter.equals("mumoe-cp") ? MumoeForm.CP : MumoeForm.TR;
        int[] experts = MumoeConfig.parseExperts(mumoeExperts, "--mumoe-experts");
        String ranks = mumoeRank != null ? mumoeRank : form == MumoeForm.CP ? "8"
                : String.join(",", java.util.Collections.nCopies(form.rankCount(experts.length), "4"));
        int[] r;
        try {
            r = java.util.Arrays.stream(ranks.split(",", -1)).mapToInt(v -> Integer.parseInt(v.trim())).toArray();
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException("--mumoe-rank " + ranks + ": expected integers (R, or r1,r2,...)");
        }
        MumoeConfig mumoe = new MumoeConfig(form, experts, r,
                MumoeConfig.parseTargets(mumoeTargets, "--mumoe-targets"), GateActivation.parse(mumoeGate,
                "--mumoe-gate"));
        TrainState.checkMumoe(config);
        System.err.printf(Locale.ROOT, "train: %s, %d trainable parameters%n", mumoe,
                mumoe.parameterCount(config));
        return mumoe;
    }

    /** A low-rank model trains all its experts' factors and writes a checkpoint; PEFT adapters do not apply. */
    private void checkLowRankOptions(ModelConfig config) {
        TrainState.requireSvdForm(config);
        int modelRank = config.low_rank_experts_rank;
        if (rank != null && rank != modelRank) {
            throw new IllegalArgumentException("--rank " + rank + " disagrees with the low-rank model's rank "
                    + modelRank + " (surgery lowrank); omit --rank to train at the model's rank");
        }
        if (alpha != null && alpha != modelRank) {
            throw new IllegalArgumentException("--alpha " + fmt(alpha) + " disagrees with the low-rank model's "
                    + "alpha " + modelRank + " (its rank: scale 1); omit --alpha");
        }
        if (merge) {
            throw new IllegalArgumentException("--merge does not apply to a low-rank model (surgery lowrank): PEFT "
                    + "adapters need full experts; train writes the trained model to OUT/" + TrainOutputs.MODEL);
        }
        if (EnumSet.copyOf(targets).size() != Projection.values().length) {
            throw new IllegalArgumentException("a low-rank model (surgery lowrank) trains the LoRA experts of all of w1, "
                    + "w3, w2; --targets " + targets + " names fewer");
        }
        System.err.printf("train: low-rank model: training its rank-%d stacked LoRA experts (scale 1) from the "
                + "checkpoint; writes OUT/%s%n", config.low_rank_experts_rank, TrainOutputs.MODEL);
    }

    private static String fmt(double v) {
        return v == Math.rint(v) && Math.abs(v) < 1e15 ? Long.toString((long) v) : Double.toString(v);
    }

    /** The model must be an MoE checkpoint whose tensors match config.json, and long enough for --window. */
    private ModelConfig checkModel(String modelUri, Configuration conf) {
        ModelConfig config = ModelFolder.readConfig(new Path(modelUri), conf);
        if (config.num_experts < 1) {
            throw new IllegalArgumentException(modelUri + " is a dense " + config.modelType
                    + " model; train adapts MoE experts (mixtral, qwen2_moe, qwen3_moe, olmoe)");
        }
        try (Checkpoint checkpoint = Checkpoint.open(new Path(modelUri), conf)) {
            ModelSchema.check(config, checkpoint);
        }
        Tokenizers.checked(modelUri, config.vocab_size);
        return config;
    }
}
