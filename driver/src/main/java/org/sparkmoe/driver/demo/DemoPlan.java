package org.sparkmoe.driver.demo;

import org.apache.hadoop.fs.Path;
import org.sparkmoe.driver.calib.CalibratePlan;
import org.sparkmoe.driver.eval.EvalPlan;
import org.sparkmoe.driver.train.TrainOutputs;
import org.sparkmoe.driver.train.TrainPlan;
import org.sparkmoe.io.CheckpointLayout.Projection;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.kernels.Device;
import org.sparkmoe.surgery.TopKRescale;
import org.sparkmoe.text.TextSplit;

import java.util.EnumSet;
import java.util.List;

/**
 * What a demo run does, resolved and validated on the driver, and where it writes under {@code out}:
 * <pre>
 *   calibration/         calibrate's outputs (router-stats.json, report.html, expert-activations.safetensors)
 *   eval-base.json       eval of the model
 *   lora/                train's outputs (train-log.jsonl, checkpoints/, adapter/)
 *   eval-lora.json       eval with lora/adapter
 *   topkM/               the surgery checkpoint (surgery topk --top-k M --rescale measured)
 *   eval-topkM.json      eval of topkM/
 *   summary.txt, summary.json
 * </pre>
 *
 * @param model            model folder URI
 * @param config           its config.json
 * @param data             the text files (URIs), in name order
 * @param trainFile        the file (URI, one of {@code data}) whose valid split the LoRA is trained on
 * @param window           S tokens per window, for every stage
 * @param maxTokensPerFile calibration uses the first ⌊N/S⌋·S tokens of each file's valid split
 * @param trainSteps       LoRA optimiser steps
 * @param surgeryTopK      M experts per token after the surgery
 * @param seed             train's root seed
 * @param out              output folder URI
 * @param device           where the executors' routed experts run, in every stage
 */
public record DemoPlan(String model, ModelConfig config, List<String> data, String trainFile, int window,
                       int maxTokensPerFile, long trainSteps, int surgeryTopK, long seed, String out,
                       Device device) {
    /** Windows per forward pass of calibrate and eval (their default). */
    static final int BATCH_WINDOWS = 8;
    /** The LoRA recipe docs/benchmarks.md measured on the tiny Mixtral (rank 16, alpha 32, lr 3e-3, 4 windows per step). */
    static final int TRAIN_BATCH_WINDOWS = 4;
    static final int RANK = 16;
    static final double ALPHA = 32;
    static final double LEARNING_RATE = 3e-3;
    static final double MAX_GRAD_NORM = 1.0;

    public DemoPlan {
        data = List.copyOf(data);
    }

    /**
     * The topk rescale of step 4: measured for renormalised top-k weights (norm_topk_prob), none otherwise (OLMoE,
     * Qwen2/3-MoE without it), where the measured rescale does not apply.
     */
    public static TopKRescale.Method rescale(ModelConfig config) {
        return config.norm_topk_prob ? TopKRescale.Method.MEASURED : TopKRescale.Method.NONE;
    }

    public String calibration() {
        return child("calibration");
    }

    public String lora() {
        return child("lora");
    }

    public String adapter() {
        return new Path(lora(), TrainOutputs.ADAPTER).toString();
    }

    public String surgery() {
        return child("topk" + surgeryTopK);
    }

    /** OUT/eval-{@code variant}.json. */
    public String evalReport(String variant) {
        return child("eval-" + variant + ".json");
    }

    public String child(String name) {
        return new Path(out, name).toString();
    }

    /** calibrate --split valid --max-tokens-per-file N over every file. */
    CalibratePlan calibratePlan(int partitions) {
        return new CalibratePlan(model, data, TextSplit.VALID, window, maxTokensPerFile, config.num_experts_per_tok,
                BATCH_WINDOWS, partitions, false, null, device);
    }

    /** eval (test split, the command's defaults) of {@code modelUri} with {@code topK} experts, adapter or null. */
    EvalPlan evalPlan(String modelUri, String adapterUri, int topK, int partitions) {
        return new EvalPlan(modelUri, data, TextSplit.TEST, window, topK, BATCH_WINDOWS, partitions, adapterUri,
                device);
    }

    /** train on the valid split of the train file: LoRA on w1, w2, w3, parameter averaging every step. */
    TrainPlan trainPlan(int partitions) {
        int checkpointEvery = (int) Math.min(trainSteps, Integer.MAX_VALUE); // one checkpoint, after the last round
        return new TrainPlan(model, List.of(trainFile), TextSplit.VALID, window, TRAIN_BATCH_WINDOWS, trainSteps, 1,
                partitions, lora(), checkpointEvery, false, List.copyOf(EnumSet.allOf(Projection.class)), RANK, ALPHA,
                false, LEARNING_RATE, 0, 0, MAX_GRAD_NORM, null, seed).withDevice(device);
    }
}
