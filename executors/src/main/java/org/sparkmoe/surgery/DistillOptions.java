package org.sparkmoe.surgery;

import java.io.Serializable;

/**
 * How the LoRA experts of a low-rank layer are distilled: AdamW (no weight decay by default: decay would pull the
 * experts towards the shared base) over {@code steps} minibatches of {@code batchTokens} calibration tokens, learning
 * rate with linear warmup then cosine decay ({@link org.sparkmoe.train.LrSchedule}), minibatches drawn from a seed
 * derived from {@code seed} and the layer.
 *
 * @param steps       optimiser steps per layer, ≥ 1
 * @param lr          peak learning rate
 * @param warmup      warmup steps, 0 ≤ warmup ≤ steps
 * @param batchTokens tokens per step, ≥ 1 (capped at the calibration tokens)
 * @param weightDecay AdamW's decoupled weight decay λ ≥ 0
 * @param seed        root seed
 */
public record DistillOptions(int steps, double lr, int warmup, int batchTokens, double weightDecay, long seed)
        implements Serializable {
    public DistillOptions {
        if (steps < 1) {
            throw new IllegalArgumentException("--distill-steps must be at least 1, got " + steps);
        }
        if (!(lr > 0) || Double.isInfinite(lr)) {
            throw new IllegalArgumentException("--distill-lr must be positive and finite, got " + lr);
        }
        if (warmup < 0 || warmup > steps) {
            throw new IllegalArgumentException("--distill-warmup must be in [0, " + steps + "] (the steps), got " + warmup);
        }
        if (batchTokens < 1) {
            throw new IllegalArgumentException("--distill-batch must be at least 1, got " + batchTokens);
        }
        if (!(weightDecay >= 0) || Double.isInfinite(weightDecay)) {
            throw new IllegalArgumentException("--distill-weight-decay must be ≥ 0 and finite, got " + weightDecay);
        }
    }
}
