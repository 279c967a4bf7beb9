package org.sparkmoe.train;

import java.util.Collections;
import java.util.EnumSet;
import java.util.Set;
import org.sparkmoe.adapter.MumoeConfig;
import org.sparkmoe.io.CheckpointLayout.Projection;

/**
 * What is trained: LoRA of rank R and scale α/R (PEFT's default, not rslora) on the chosen expert projections of
 * every MoE layer, the same projections of its shared expert when asked (and the model has one), and optionally the
 * routers; or, instead of LoRA, a μMoE adapter beside chosen frozen projections ({@link MumoeConfig}), trained
 * through the same steps, averaging and checkpoints (its tensors are the state's keys).
 *
 * @param targets      the adapted projections (iterated in the order gate, up, down)
 * @param rank         R ≥ 1
 * @param alpha        lora_alpha &gt; 0
 * @param trainRouter  whether the router (gate) weights are trained too
 * @param sharedExpert whether the shared expert's targets get LoRA too (same rank and alpha)
 * @param mumoe        the μMoE adapter trained instead of LoRA (no LoRA targets, frozen router), or null
 */
public record LoraSpec(Set<Projection> targets, int rank, double alpha, boolean trainRouter, boolean sharedExpert,
                       MumoeConfig mumoe)
        implements java.io.Serializable {

    /** LoRA on the routed experts only. */
    public LoraSpec(Set<Projection> targets, int rank, double alpha, boolean trainRouter) {
        this(targets, rank, alpha, trainRouter, false);
    }

    /** LoRA, no μMoE adapter. */
    public LoraSpec(Set<Projection> targets, int rank, double alpha, boolean trainRouter, boolean sharedExpert) {
        this(targets, rank, alpha, trainRouter, sharedExpert, null);
    }

    /**
     * A μMoE adapter alone: nothing else trained. Rank and alpha are LoRA's and unused (1, 1).
     */
    public static LoraSpec mumoe(MumoeConfig mumoe) {
        return new LoraSpec(Set.of(), 1, 1.0, false, false, mumoe);
    }

    public LoraSpec {
        if (targets == null) {
            throw new IllegalArgumentException("LoRA targets must not be null");
        }
        targets = Collections.unmodifiableSet(targets.isEmpty() ? EnumSet.noneOf(Projection.class)
                : EnumSet.copyOf(targets));
        if (mumoe != null && (!targets.isEmpty() || trainRouter || sharedExpert)) {
            throw new IllegalArgumentException("a μMoE adapter trains only its own factors and gates: no LoRA targets "
                    + "and a frozen router (--train-router and --shared-expert-lora apply to --adapter lora), got "
                    + "targets " + targets + (trainRouter ? " and a trained router" : ""));
        }
        if (targets.isEmpty() && !trainRouter && mumoe == null) {
            throw new IllegalArgumentException("nothing to train: no LoRA targets and the router is frozen");
        }
        if (sharedExpert && targets.isEmpty()) {
            throw new IllegalArgumentException("LoRA on the shared expert needs LoRA targets, got none");
        }
        if (rank < 1) {
            throw new IllegalArgumentException("LoRA rank must be at least 1, got " + rank);
        }
        if (!(alpha > 0) || Double.isInfinite(alpha)) {
            throw new IllegalArgumentException("LoRA alpha must be positive and finite, got " + alpha);
        }
    }

    /**
     * Parses a comma-separated list of projection names: Mixtral's w1, w3, w2 or Qwen2-MoE's gate_proj, up_proj,
     * down_proj (either naming works for either model).
     */
    public static Set<Projection> parseTargets(String csv) {
        EnumSet<Projection> out = EnumSet.noneOf(Projection.class);
        for (String raw : csv.split(",", -1)) {
            String name = raw.trim();
            switch (name) {
                case "w1", "gate_proj" -> out.add(Projection.GATE);
                case "w3", "up_proj" -> out.add(Projection.UP);
                case "w2", "down_proj" -> out.add(Projection.DOWN);
                default -> throw new IllegalArgumentException("unknown LoRA target '" + name
                        + "' in '" + csv + "': expected w1, w2, w3, gate_proj, up_proj or down_proj");
            }
        }
        return out;
    }

    /** α/R. */
    public double scale() {
        return alpha / rank;
    }
}
