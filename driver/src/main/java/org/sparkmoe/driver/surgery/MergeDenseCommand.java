package org.sparkmoe.driver.surgery;

import com.fasterxml.jackson.databind.node.ObjectNode;
import org.sparkmoe.surgery.DenseMergeSurgery;
import org.sparkmoe.surgery.MergeWeights;
import org.sparkmoe.surgery.RoutingStats;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Spec;

import java.util.Map;
import java.util.concurrent.Callable;

/** {@code sparkmoe surgery merge-dense}: every MoE layer's experts averaged into one dense FFN (a Mistral checkpoint). */
@Command(name = "merge-dense", mixinStandardHelpOptions = true, sortOptions = false,
        description = {"Merge each MoE layer's experts into one dense SwiGLU FFN, W = Σₑ wₑ·Wₑ for w1, w3, w2, and write "
                + "a checkpoint without experts: mixtral → mistral, qwen3_moe → qwen3, olmoe and gpt_oss → one expert "
                + "per layer, glm4_moe, deepseek_v2 and deepseek_v3 → the same type with every layer dense (the shared "
                + "experts folded into each MLP).",
                "uniform: wₑ = 1/E; router-weighted: w = softmax(mean router logit / T) from --stats; --top-k-mask K keeps "
                        + "the K largest weights and renormalises."})
public final class MergeDenseCommand implements Callable<Integer> {
    @Spec
    CommandSpec spec;

    @Mixin
    SurgeryOptions options;

    @Option(names = "--method", required = true, paramLabel = "uniform|router-weighted", description = "Expert weights.")
    String method;

    @Option(names = "--temperature", defaultValue = "1.0", paramLabel = "T",
            description = "Softmax temperature of router-weighted. Default: ${DEFAULT-VALUE}.")
    double temperature;

    @Option(names = "--top-k-mask", paramLabel = "K", description = "Keep only the K largest weights, renormalised.")
    Integer topKMask;

    @Override
    public Integer call() {
        boolean routerWeighted = SurgeryRun.choice(spec, "--method", method, Map.of("uniform", false, "router-weighted", true));
        SurgeryRun run = new SurgeryRun(options);
        RoutingStats stats = routerWeighted ? run.stats("--method router-weighted") : null;
        double[][] weights = new double[run.moeLayers.length][];
        for (int i = 0; i < weights.length; i++) {
            weights[i] = routerWeighted ? MergeWeights.routerWeighted(stats.layer(i).meanLogit(), temperature)
                    : MergeWeights.uniform(run.config.num_experts);
            if (topKMask != null) {
                weights[i] = MergeWeights.topKMask(weights[i], topKMask);
            }
        }
        ObjectNode settings = SurgeryRun.settings();
        settings.put("method", method);
        if (routerWeighted) {
            settings.put("temperature", temperature);
        }
        if (topKMask != null) {
            settings.put("top_k_mask", topKMask);
        }
        DenseMergeSurgery surgery = new DenseMergeSurgery(run.config, weights);
        if (run.planOnly(surgery)) {
            return 0;
        }
        run.execute("merge-dense", surgery, settings);
        return 0;
    }
}
