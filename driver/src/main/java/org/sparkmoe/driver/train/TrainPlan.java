package org.sparkmoe.driver.train;

import org.apache.hadoop.fs.Path;
import org.sparkmoe.adapter.AdapterConfig;
import org.sparkmoe.adapter.MumoeConfig;
import org.sparkmoe.driver.PlanChecks;
import org.sparkmoe.io.CheckpointLayout.Projection;
import org.sparkmoe.kernels.Device;
import org.sparkmoe.mumoe.GateActivation;
import org.sparkmoe.text.TextSplit;
import org.sparkmoe.train.AdamW;
import org.sparkmoe.train.LoraSpec;
import org.sparkmoe.train.LrSchedule;
import org.sparkmoe.train.TrainOptions;

import java.io.Serializable;
import java.net.URI;
import java.util.EnumSet;
import java.util.List;

/**
 * What a train run does, resolved and validated on the driver (every group checks itself in its constructor),
 * built once and shipped to executors as it is with every round.
 *
 * @param model   model folder URI
 * @param windows the text and how it is cut and batched
 * @param rounds  how many steps, how they are grouped into rounds and spread over partitions, checkpointing
 * @param options how every step runs: the LoRA spec, the AdamW optimiser and its learning-rate schedule, gradient
 *                clipping, the router load-balancing weight and the root seed
 * @param out     output folder URI
 * @param merge   also write the merged HF checkpoint
 * @param device  where the executors' routed experts run
 */
public record TrainPlan(String model, Windows windows, Rounds rounds, TrainOptions options, String out, boolean merge,
                        Device device) implements Serializable {

    /**
     * @param data         text file URIs
     * @param split        docs/data.md split each file contributes
     * @param window       S tokens per window (≥ 2)
     * @param batchWindows B windows per optimiser step and partition (≥ 1)
     */
    public record Windows(List<String> data, TextSplit split, int window, int batchWindows) implements Serializable {
        public Windows {
            data = PlanChecks.requireData(data);
            PlanChecks.requireNonNull("--split", split);
            PlanChecks.requireAtLeast("--window", window, 2);
            PlanChecks.requireAtLeast("--batch-windows", batchWindows, 1);
        }
    }

    /**
     * What a round averages: each partition's parameters and AdamW moments after its F local steps, or each
     * partition's gradients at the round's state, on whose mean one AdamW step is taken (synchronous data
     * parallelism, as DistributedDataParallel over P ranks).
     */
    public enum Averaging {
        PARAMETERS, GRADIENTS;

        /** --averaging's value: parameters or gradients. */
        public static Averaging parse(String value) {
            return switch (value) {
                case "parameters" -> PARAMETERS;
                case "gradients" -> GRADIENTS;
                default -> throw new IllegalArgumentException("--averaging must be parameters or gradients, got '"
                        + value + "'");
            };
        }

        public String id() {
            return name().toLowerCase(java.util.Locale.ROOT);
        }
    }

    /**
     * @param steps              optimiser steps in all (each partition takes every one of them on its own windows)
     * @param averagingFrequency F local steps between two averagings (one round); 1 when averaging gradients
     * @param partitions         P partitions, one per executor slot
     * @param checkpointEvery    write a checkpoint every N rounds (and always after the last)
     * @param averaging          what a round averages
     */
    public record Rounds(long steps, int averagingFrequency, int partitions, int checkpointEvery, Averaging averaging)
            implements Serializable {
        public Rounds {
            PlanChecks.requireAtLeast("--steps", steps, 1);
            PlanChecks.requireAtLeast("--averaging-frequency", averagingFrequency, 1);
            PlanChecks.requireAtLeast("--partitions", partitions, 1);
            PlanChecks.requireAtLeast("--checkpoint-every", checkpointEvery, 1);
            PlanChecks.requireNonNull("--averaging", averaging);
            if (averaging == Averaging.GRADIENTS && averagingFrequency != 1) {
                throw new IllegalArgumentException("--averaging gradients takes one optimiser step per round, on the "
                        + "mean of the partitions' gradients: --averaging-frequency must be 1, got "
                        + averagingFrequency);
            }
        }

        /** Parameter averaging. */
        public Rounds(long steps, int averagingFrequency, int partitions, int checkpointEvery) {
            this(steps, averagingFrequency, partitions, checkpointEvery, Averaging.PARAMETERS);
        }

        public Rounds withPartitions(int p) {
            return new Rounds(steps, averagingFrequency, p, checkpointEvery, averaging);
        }

        public Rounds withAveraging(Averaging a) {
            return new Rounds(steps, averagingFrequency, partitions, checkpointEvery, a);
        }

        /** Rounds of F steps (the last may be shorter). */
        public long count() {
            return (steps + averagingFrequency - 1) / averagingFrequency;
        }
    }

    public TrainPlan {
        PlanChecks.requireModel(model);
        PlanChecks.requireNonNull("the windows", windows);
        PlanChecks.requireNonNull("the rounds", rounds);
        PlanChecks.requireNonNull("the train options", options);
        PlanChecks.requireNonNull("--device", device);
        if (options.schedule().total() != rounds.steps()) {
            throw new IllegalArgumentException("the learning-rate schedule covers " + options.schedule().total()
                    + " steps, --steps is " + rounds.steps());
        }
    }

    /**
     * The plan from flat option values, on the CPU (tests and the demo): builds the option groups once.
     *
     * @param auxLossCoef load-balancing loss weight; null for config.json's router_aux_loss_coef
     */
    public TrainPlan(String model, List<String> data, TextSplit split, int window, int batchWindows, long steps,
                     int averagingFrequency, int partitions, String out, int checkpointEvery, boolean merge,
                     List<Projection> targets, int rank, double alpha, boolean trainRouter, double learningRate,
                     long warmupSteps, double weightDecay, double maxGradNorm, Double auxLossCoef, long seed) {
        this(model, new Windows(data, split, window, batchWindows),
                new Rounds(steps, averagingFrequency, partitions, checkpointEvery),
                options(lora(targets, rank, alpha, trainRouter, false), learningRate, warmupSteps, steps, weightDecay,
                        maxGradNorm, auxLossCoef, seed), out, merge, Device.CPU);
    }

    /**
     * The LoRA spec of --targets, --rank, --alpha, --train-router, --shared-expert-lora; --targets must name at least
     * one projection.
     */
    public static LoraSpec lora(List<Projection> targets, int rank, double alpha, boolean trainRouter,
                                boolean sharedExpert) {
        if (targets == null || targets.isEmpty()) {
            throw new IllegalArgumentException("--targets must name at least one of w1, w2, w3");
        }
        return new LoraSpec(EnumSet.copyOf(targets), rank, alpha, trainRouter, sharedExpert);
    }

    /** How every step runs: torch's AdamW betas and epsilon with this weight decay, warmup then cosine decay. */
    public static TrainOptions options(LoraSpec lora, double learningRate, long warmupSteps, long steps,
                                       double weightDecay, double maxGradNorm, Double auxLossCoef, long seed) {
        if (warmupSteps < 0 || warmupSteps > steps) {
            throw new IllegalArgumentException("--warmup must be in [0, --steps " + steps + "], got " + warmupSteps);
        }
        if (!(weightDecay >= 0) || Double.isInfinite(weightDecay)) {
            throw new IllegalArgumentException("--weight-decay must be ≥ 0 and finite, got " + weightDecay);
        }
        AdamW torch = AdamW.torchDefaults();
        AdamW adamW = new AdamW(torch.beta1(), torch.beta2(), torch.eps(), weightDecay);
        return new TrainOptions(lora, new LrSchedule(learningRate, warmupSteps, steps), adamW, maxGradNorm,
                auxLossCoef, seed, false, false); // LoraSpec, LrSchedule, AdamW and TrainOptions check the rest
    }

    public TrainPlan withOptions(TrainOptions o) {
        return new TrainPlan(model, windows, rounds, o, out, merge, device);
    }

    public TrainPlan withPartitions(int p) {
        return new TrainPlan(model, windows, rounds.withPartitions(p), options, out, merge, device);
    }

    public TrainPlan withDevice(Device d) {
        return new TrainPlan(model, windows, rounds, options, out, merge, d);
    }

    public List<String> data() {
        return windows.data();
    }

    public TextSplit split() {
        return windows.split();
    }

    public int window() {
        return windows.window();
    }

    public int batchWindows() {
        return windows.batchWindows();
    }

    public long steps() {
        return rounds.steps();
    }

    public int averagingFrequency() {
        return rounds.averagingFrequency();
    }

    public int partitions() {
        return rounds.partitions();
    }

    public int checkpointEvery() {
        return rounds.checkpointEvery();
    }

    /** Rounds of F steps (the last may be shorter). */
    public long roundCount() {
        return rounds.count();
    }

    public LoraSpec loraSpec() {
        return options.lora();
    }

    public long seed() {
        return options.seed();
    }

    /**
     * The PEFT adapter this run writes, naming {@code base} as its base_model_name_or_path (train's
     * --base-model-name, else {@link #baseModelName}).
     */
    public AdapterConfig adapterConfig(String base) {
        if (options.lora().mumoe() != null) {
            throw new IllegalStateException("a μMoE run writes no PEFT adapter config; see mumoeConfig()");
        }
        LoraSpec lora = options.lora();
        return new AdapterConfig(lora.rank(), lora.alpha(), List.copyOf(lora.targets()), lora.trainRouter(), base,
                lora.sharedExpert());
    }

    /**
     * The model as the adapter names it by default: a local folder as a plain path, as PEFT records one (a
     * {@code file:} URI would not load with {@code AutoPeftModelForCausalLM}), any other URI as it is.
     */
    public String baseModelName() {
        URI uri = new Path(model).toUri();
        return "file".equals(uri.getScheme()) ? uri.getPath() : model;
    }

    /** The keys of {@link #resumeSignature}, in its order; each is the name of the train flag it records. */
    static final List<String> SIGNATURE_KEYS = List.of("data", "split", "window", "batch-windows", "steps",
            "averaging-frequency", "partitions", "targets", "rank", "alpha", "train-router", "shared-expert-lora", "lr",
            "warmup",
            "weight-decay", "max-grad-norm", "aux-loss-coef", "seed", "adapter", "mumoe-experts", "mumoe-rank",
            "mumoe-targets", "averaging");
    private static final java.util.regex.Pattern SIGNATURE_KEY = java.util.regex.Pattern.compile(
            "(?:^| )(" + String.join("|", SIGNATURE_KEYS) + ")=");

    /**
     * A {@link #resumeSignature} split into key → value; a value (a --data list of paths) may hold spaces, so a
     * key starts only where one of {@link #SIGNATURE_KEYS} follows a space.
     */
    static java.util.Map<String, String> parseSignature(String signature) {
        java.util.Map<String, String> options = new java.util.LinkedHashMap<>();
        java.util.regex.Matcher m = SIGNATURE_KEY.matcher(signature);
        String key = null;
        int valueStart = 0;
        while (m.find()) {
            if (key != null) {
                options.putIfAbsent(key, signature.substring(valueStart, m.start()));
            }
            key = m.group(1);
            valueStart = m.end();
        }
        if (key != null) {
            options.putIfAbsent(key, signature.substring(valueStart));
        }
        return options;
    }

    /**
     * The options a checkpoint must have been written with for {@code --resume} to continue it, as
     * "key=value key=value ..." with the {@link #SIGNATURE_KEYS} in order.
     */
    public String resumeSignature() {
        LoraSpec lora = options.lora();
        LrSchedule schedule = options.schedule();
        return "data=" + data() + " split=" + split() + " window=" + window() + " batch-windows=" + batchWindows()
                + " steps=" + steps() + " averaging-frequency=" + averagingFrequency() + " partitions=" + partitions()
                + " targets=" + List.copyOf(lora.targets()) + " rank=" + lora.rank() + " alpha=" + lora.alpha()
                + " train-router=" + lora.trainRouter() + " shared-expert-lora=" + lora.sharedExpert()
                + " lr=" + schedule.peak() + " warmup=" + schedule.warmup()
                + " weight-decay=" + options.optimizer().weightDecay() + " max-grad-norm=" + options.maxGradNorm()
                + " aux-loss-coef=" + options.auxLossCoef() + " seed=" + options.seed() + mumoeSignature(lora)
                + (averagesGradients() ? " averaging=" + Averaging.GRADIENTS.id() : "");
    }

    /** Whether a round averages gradients and takes one step on their mean (else parameters and moments). */
    public boolean averagesGradients() {
        return rounds.averaging() == Averaging.GRADIENTS;
    }

    /**
     * A μMoE run's adapter flags, appended to the signature (a LoRA run's signature is as before: none); the gate
     * only when it is not softmax, so a softmax run's signature, and its resume, are as before --mumoe-gate.
     */
    private static String mumoeSignature(LoraSpec lora) {
        MumoeConfig m = lora.mumoe();
        if (m == null) {
            return "";
        }
        return " adapter=mumoe-" + m.form().id() + " mumoe-experts=" + m.expertsSpelling() + " mumoe-rank="
                + java.util.Arrays.stream(m.ranks()).mapToObj(Integer::toString)
                .collect(java.util.stream.Collectors.joining(","))
                + " mumoe-targets=" + m.targets().stream().map(s -> s.id()).toList()
                + (m.gate() == GateActivation.SOFTMAX ? "" : " mumoe-gate=" + m.gate().id());
    }
}
