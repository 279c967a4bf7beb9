package org.sparkmoe.driver.surgery;

import com.fasterxml.jackson.databind.node.ObjectNode;
import org.apache.spark.api.java.JavaSparkContext;
import org.sparkmoe.surgery.LayerResult;
import org.sparkmoe.surgery.TopKRescale;
import org.sparkmoe.surgery.TopKSurgery;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Spec;

import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Callable;

/** {@code sparkmoe surgery topk}: a new num_experts_per_tok, with the down-projections rescaled. */
@Command(name = "topk", mixinStandardHelpOptions = true, sortOptions = false,
        description = {"Change the experts per token from K to M and scale every expert's down-projection (w2) by α so "
                + "the expected norm of the MoE output is kept: α = √(E[Σ_top-K ĝ²] / E[Σ_top-M ĝ²]) with ĝ the "
                + "renormalised top weights.",
                "none: α = 1; uniform: equal weights, α = √(M/K); measured: both expectations from calibrate's "
                        + "topm_sq_sum, per layer (needs --stats)."})
public final class TopKCommand implements Callable<Integer> {
    private static final Map<String, TopKRescale.Method> METHODS = new LinkedHashMap<>();

    static {
        METHODS.put("none", TopKRescale.Method.NONE);
        METHODS.put("uniform", TopKRescale.Method.UNIFORM);
        METHODS.put("measured", TopKRescale.Method.MEASURED);
    }

    @Spec
    CommandSpec spec;

    @Mixin
    SurgeryOptions options;

    @Option(names = "--top-k", required = true, paramLabel = "M", description = "New experts per token, 1..E.")
    int topK;

    @Option(names = "--rescale", defaultValue = "uniform", paramLabel = "none|uniform|measured",
            description = "How α is chosen. Default: ${DEFAULT-VALUE}.")
    String rescale;

    @Override
    public Integer call() {
        TopKRescale.Method method = SurgeryRun.choice(spec, "--rescale", rescale, METHODS);
        SurgeryRun run = new SurgeryRun(options);
        TopKSurgery surgery = surgery(run, topK, method);
        if (run.planOnly(surgery)) {
            return 0;
        }
        run.execute("topk", surgery, settings(run, topK, method));
        return 0;
    }

    /**
     * topk on a SparkContext the caller owns (a pipeline of several jobs): the same checks, Spark tasks and output
     * folder (with surgery.json) as the command.
     *
     * @return per MoE layer, the result; its metric "alpha" is the w2 scale
     */
    public static List<LayerResult> run(JavaSparkContext sc, SurgeryOptions options, int topK,
                                        TopKRescale.Method method) {
        SurgeryRun run = new SurgeryRun(options);
        return run.execute(sc, "topk", surgery(run, topK, method), settings(run, topK, method));
    }

    private static TopKSurgery surgery(SurgeryRun run, int topK, TopKRescale.Method method) {
        if (topK < 1 || topK > run.config.num_experts) {
            throw new IllegalArgumentException("--top-k must be in [1, " + run.config.num_experts
                    + "] (the model's experts), got " + topK);
        }
        double[] alpha = TopKSurgery.alphas(method, run.config, run.moeLayers.length, topK,
                method == TopKRescale.Method.MEASURED ? run.stats("--rescale measured") : null);
        return new TopKSurgery(run.config, topK, alpha);
    }

    private static ObjectNode settings(SurgeryRun run, int topK, TopKRescale.Method method) {
        ObjectNode settings = SurgeryRun.settings();
        settings.put("old_top_k", run.config.num_experts_per_tok);
        settings.put("top_k", topK);
        settings.put("rescale", METHODS.entrySet().stream().filter(e -> e.getValue() == method).findFirst()
                .orElseThrow().getKey());
        return settings;
    }
}
