package org.sparkmoe.driver.eval;

import org.sparkmoe.driver.PlanChecks;

import java.io.Serializable;

/**
 * The original model an eval run compares against ({@code --baseline}), resolved and validated on the driver.
 *
 * @param model model folder URI; same tokenizer and vocabulary as the evaluated model, any expert count
 * @param topK    its experts per token (its config.json's; 0 for a dense model)
 * @param adapter the adapter folder URI applied to it, or null: with {@code eval --mute-experts} the baseline is the
 *                model with its μMoE adapter, none of its experts muted
 */
public record Baseline(String model, int topK, String adapter) implements Serializable {
    /** The plain model {@code model} (--baseline). */
    public Baseline(String model, int topK) {
        this(model, topK, null);
    }

    public Baseline {
        if (model == null || model.isBlank()) {
            throw new IllegalArgumentException("--baseline must name a model folder, got "
                    + (model == null ? "none" : "'" + model + "'"));
        }
        PlanChecks.requireAtLeast("the baseline's num_experts_per_tok", topK, 0);
    }
}
