package org.sparkmoe.train;

/**
 * How one training step runs (everything but the data and the state); immutable plain values.
 *
 * @param lora         what is trained
 * @param schedule     learning rate per step
 * @param optimizer    AdamW's constants
 * @param maxGradNorm  global gradient-norm clip (positive; {@code Double.POSITIVE_INFINITY} for none)
 * @param auxLossCoef  weight of the load-balancing loss; null for config.json's {@code router_aux_loss_coef}
 *                     (transformers adds the term only with {@code output_router_logits}; here it is always on,
 *                     0 turns it off)
 * @param seed         the root seed (router jitter noise per step is derived from it)
 * @param checkpointActivations keep only each decoder layer's input in the forward and recompute the layer in the
 *                     backward: less memory, one more forward per step, the same bits
 * @param passWorkspace run each step's forward, loss and backward in the thread's pass workspace
 *                     ({@code StepWorkspace.pass}): the arrays reuse the last step's memory instead of fresh
 *                     allocations that libnd4j zero-fills, and the thread keeps that memory (about a step's
 *                     activations) while it lives; the same bits. The driver's memory plan sets it for small steps
 */
public record TrainOptions(LoraSpec lora, LrSchedule schedule, AdamW optimizer, double maxGradNorm,
                           Double auxLossCoef, long seed, boolean checkpointActivations,
                           boolean passWorkspace)
        implements java.io.Serializable {

    public TrainOptions {
        if (lora == null || schedule == null || optimizer == null) {
            throw new IllegalArgumentException("train options need a LoRA spec, a schedule and an optimiser");
        }
        if (!(maxGradNorm > 0)) {
            throw new IllegalArgumentException("max gradient norm must be positive (or infinite for none), got "
                    + maxGradNorm);
        }
        if (auxLossCoef != null && (!(auxLossCoef >= 0) || auxLossCoef.isInfinite())) {
            throw new IllegalArgumentException("router aux loss coefficient must be ≥ 0 and finite, got "
                    + auxLossCoef);
        }
        if (checkpointActivations && passWorkspace) {   // the workspace would keep every recomputed layer
            throw new IllegalArgumentException("a pass workspace keeps what checkpointed activations free: use one");
        }
    }

    /**
     * torch's AdamW defaults, clipping at 1.0 (transformers' Trainer default), the config's aux coefficient, every
     * activation kept, fresh arrays in every step.
     */
    public static TrainOptions defaults(LoraSpec lora, LrSchedule schedule, long seed) {
        return new TrainOptions(lora, schedule, AdamW.torchDefaults(), 1.0, null, seed, false, false);
    }

    public TrainOptions withAuxLossCoef(Double coef) {
        return new TrainOptions(lora, schedule, optimizer, maxGradNorm, coef, seed, checkpointActivations,
                passWorkspace);
    }

    public TrainOptions withMaxGradNorm(double max) {
        return new TrainOptions(lora, schedule, optimizer, max, auxLossCoef, seed, checkpointActivations,
                passWorkspace);
    }

    public TrainOptions withOptimizer(AdamW adamW) {
        return new TrainOptions(lora, schedule, adamW, maxGradNorm, auxLossCoef, seed, checkpointActivations,
                passWorkspace);
    }

    public TrainOptions withCheckpointActivations(boolean checkpoint) {
        return new TrainOptions(lora, schedule, optimizer, maxGradNorm, auxLossCoef, seed, checkpoint,
                passWorkspace);
    }

    public TrainOptions withPassWorkspace(boolean workspace) {
        return new TrainOptions(lora, schedule, optimizer, maxGradNorm, auxLossCoef, seed, checkpointActivations,
                workspace);
    }
}
