package org.sparkmoe.driver.surgery;

import com.fasterxml.jackson.databind.node.ObjectNode;
import org.sparkmoe.surgery.LayerResult;
import org.sparkmoe.surgery.LowRankSurgery;
import org.sparkmoe.surgery.MergeWeights;
import org.sparkmoe.surgery.RoutingStats;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Spec;

import java.util.List;
import java.util.Map;
import java.util.concurrent.Callable;

/** {@code sparkmoe surgery lowrank}: experts → shared base + rank-R LoRA experts (truncated SVD). */
@Command(name = "lowrank", mixinStandardHelpOptions = true, sortOptions = false,
        description = {"Convert each MoE layer's experts into one shared base FFN plus E rank-R LoRA experts: per "
                + "projection, base = mean of the experts (uniform, or weighted by calibration selection counts), and "
                + "W_e ≈ base + B_e·A_e by truncated SVD of W_e − base. The model then runs through the shared-base "
                + "(MoLoRA) path: per token one FFN with weights base + Σ_k g_k·B_k·A_k. Mixtral models only.",
                "Prints, per layer, the relative Frobenius error of each projection and the expert parameters before "
                        + "and after."})
public final class LowRankCommand implements Callable<Integer> {
    @Spec
    CommandSpec spec;

    @Mixin
    SurgeryOptions options;

    @Option(names = "--rank", required = true, paramLabel = "R", description = "LoRA rank of every expert.")
    int rank;

    @Option(names = "--base", defaultValue = "mean", paramLabel = "mean|router-weighted",
            description = "How the shared base weighs the experts. Default: ${DEFAULT-VALUE}.")
    String base;

    @Override
    public Integer call() {
        boolean weighted = SurgeryRun.choice(spec, "--base", base, Map.of("mean", false, "router-weighted", true));
        SurgeryRun run = new SurgeryRun(options);
        RoutingStats stats = weighted ? run.stats("--base router-weighted") : null;
        double[][] weights = new double[run.moeLayers.length][];
        for (int i = 0; i < weights.length; i++) {
            weights[i] = weighted ? LowRankSurgery.frequencyWeights(stats.layer(i).count())
                    : MergeWeights.uniform(run.config.num_experts);
        }
        LowRankSurgery surgery = new LowRankSurgery(run.config, rank, weights);
        ObjectNode settings = SurgeryRun.settings();
        settings.put("rank", rank);
        settings.put("base", base);
        List<LayerResult> results = run.execute("lowrank", surgery, settings);
        double before = sum(results, "_params_before");
        double after = sum(results, "_params_after");
        System.out.printf("expert parameters: %.0f before, %.0f after (%.4f of before)%n", before, after, after / before);
        return 0;
    }

    /** Σ over layers and projections of the metrics whose name ends with {@code suffix}. */
    private static double sum(List<LayerResult> results, String suffix) {
        return results.stream().flatMap(r -> r.metrics().entrySet().stream()).filter(e -> e.getKey().endsWith(suffix))
                .mapToDouble(Map.Entry::getValue).sum();
    }
}
