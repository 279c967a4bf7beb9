package org.sparkmoe.driver.train;

import org.apache.hadoop.fs.Path;
import org.sparkmoe.adapter.AdapterConfig;
import org.sparkmoe.io.CheckpointLayout.Projection;
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
 * What a train run does, resolved and validated on the driver; shipped to executors with every round.
 *
 * @param model              model folder URI
 * @param data               text file URIs
 * @param split              docs/data.md split each file contributes
 * @param window             S tokens per window
 * @param batchWindows       B windows per optimiser step and partition
 * @param steps              optimiser steps in all (each partition takes every one of them on its own windows)
 * @param averagingFrequency F local steps between two parameter averagings (one round)
 * @param partitions         P partitions, one per executor slot
 * @param out                output folder URI
 * @param checkpointEvery    write a checkpoint every N rounds (and always after the last)
 * @param merge              also write the merged HF checkpoint
 * @param targets            LoRA target projections
 * @param rank               LoRA rank R
 * @param alpha              lora_alpha
 * @param trainRouter        whether the routers are trained
 * @param learningRate       peak learning rate
 * @param warmupSteps        linear warmup steps before the cosine decay
 * @param weightDecay        AdamW's decoupled weight decay
 * @param maxGradNorm        global gradient-norm clip
 * @param auxLossCoef        load-balancing loss weight; null for config.json's router_aux_loss_coef
 * @param seed               the root seed
 */
public record TrainPlan(String model, List<String> data, TextSplit split, int window, int batchWindows, long steps,
                        int averagingFrequency, int partitions, String out, int checkpointEvery, boolean merge,
                        List<Projection> targets, int rank, double alpha, boolean trainRouter, double learningRate,
                        long warmupSteps, double weightDecay, double maxGradNorm, Double auxLossCoef, long seed)
        implements Serializable {

    public TrainPlan {
        data = List.copyOf(data);
        targets = List.copyOf(targets);
        if (targets.isEmpty()) {
            throw new IllegalArgumentException("--targets must name at least one of w1, w2, w3");
        }
        requireAtLeast("--window", window, 2);
        requireAtLeast("--batch-windows", batchWindows, 1);
        requireAtLeast("--steps", steps, 1);
        requireAtLeast("--averaging-frequency", averagingFrequency, 1);
        requireAtLeast("--partitions", partitions, 1);
        requireAtLeast("--checkpoint-every", checkpointEvery, 1);
        if (warmupSteps < 0 || warmupSteps > steps) {
            throw new IllegalArgumentException("--warmup must be in [0, --steps " + steps + "], got " + warmupSteps);
        }
        if (!(weightDecay >= 0) || Double.isInfinite(weightDecay)) {
            throw new IllegalArgumentException("--weight-decay must be ≥ 0 and finite, got " + weightDecay);
        }
        options(targets, rank, alpha, trainRouter, learningRate, warmupSteps, steps, weightDecay, maxGradNorm,
                auxLossCoef, seed); // LoraSpec, LrSchedule, AdamW and TrainOptions check the rest
    }

    private static void requireAtLeast(String flag, long value, long min) {
        if (value < min) {
            throw new IllegalArgumentException(flag + " must be ≥ " + min + ", got " + value);
        }
    }

    public TrainPlan withPartitions(int p) {
        return new TrainPlan(model, data, split, window, batchWindows, steps, averagingFrequency, p, out,
                checkpointEvery, merge, targets, rank, alpha, trainRouter, learningRate, warmupSteps, weightDecay,
                maxGradNorm, auxLossCoef, seed);
    }

    /** Rounds of F steps (the last may be shorter). */
    public long rounds() {
        return (steps + averagingFrequency - 1) / averagingFrequency;
    }

    public LoraSpec loraSpec() {
        return options().lora();
    }

    /** How every step runs: torch's AdamW betas and epsilon with this weight decay. */
    public TrainOptions options() {
        return options(targets, rank, alpha, trainRouter, learningRate, warmupSteps, steps, weightDecay, maxGradNorm,
                auxLossCoef, seed);
    }

    private static TrainOptions options(List<Projection> targets, int rank, double alpha, boolean trainRouter,
                                        double learningRate, long warmupSteps, long steps, double weightDecay,
                                        double maxGradNorm, Double auxLossCoef, long seed) {
        AdamW torch = AdamW.torchDefaults();
        AdamW adamW = new AdamW(torch.beta1(), torch.beta2(), torch.eps(), weightDecay);
        return new TrainOptions(new LoraSpec(EnumSet.copyOf(targets), rank, alpha, trainRouter),
                new LrSchedule(learningRate, warmupSteps, steps), adamW, maxGradNorm, auxLossCoef, seed);
    }

    /**
     * The PEFT adapter this run writes. A local base model is recorded as a plain path, as PEFT records one (a
     * {@code file:} URI would not load with {@code AutoPeftModelForCausalLM}).
     */
    public AdapterConfig adapterConfig() {
        URI uri = new Path(model).toUri();
        String base = "file".equals(uri.getScheme()) ? uri.getPath() : model;
        return new AdapterConfig(rank, alpha, targets, trainRouter, base);
    }

    /** The options a checkpoint must have been written with for {@code --resume} to continue it. */
    public String resumeSignature() {
        return "data=" + data + " split=" + split + " window=" + window + " batch-windows=" + batchWindows
                + " steps=" + steps + " averaging-frequency=" + averagingFrequency + " partitions=" + partitions
                + " targets=" + targets + " rank=" + rank + " alpha=" + alpha + " train-router=" + trainRouter
                + " lr=" + learningRate + " warmup=" + warmupSteps + " weight-decay=" + weightDecay
                + " max-grad-norm=" + maxGradNorm + " aux-loss-coef=" + auxLossCoef + " seed=" + seed;
    }
}
