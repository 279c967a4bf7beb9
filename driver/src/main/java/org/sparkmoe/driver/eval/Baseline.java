package org.sparkmoe.driver.eval;

import org.sparkmoe.driver.PlanChecks;

import java.io.Serializable;

/**
 * The original model an eval run compares against ({@code --baseline}), resolved and validated on the driver.
 *
 * @param model model folder URI; same tokenizer and vocabulary as the evaluated model, any expert count
 * @param topK  its experts per token (its config.json's; 0 for a dense model)
 */
public record Baseline(String model, int topK) implements Serializable {
    public Baseline {
        if (model == null || model.isBlank()) {
            throw new IllegalArgumentException("--baseline must name a model folder, got "
                    + (model == null ? "none" : "'" + model + "'"));
        }
        PlanChecks.requireAtLeast("the baseline's num_experts_per_tok", topK, 0);
    }
}
