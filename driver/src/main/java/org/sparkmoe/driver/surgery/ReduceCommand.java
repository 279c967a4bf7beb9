package org.sparkmoe.driver.surgery;

import com.fasterxml.jackson.databind.node.ObjectNode;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.surgery.ExpertReduceSurgery;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Spec;

import java.util.Map;
import java.util.concurrent.Callable;

/** {@code sparkmoe surgery reduce}: k-means the experts of each MoE layer into fewer, merged by frequency. */
@Command(name = "reduce", mixinStandardHelpOptions = true, sortOptions = false,
        description = {"Cluster each MoE layer's E experts into E' with seeded k-means and merge every cluster into one "
                + "expert: weights and gate row are the members' means weighted by their calibration selection counts. "
                + "Writes the E'-expert checkpoint and OUT/expert-map.json, the map 'retrain-router --expert-map' takes.",
                "--by routing clusters on routing profiles (per-file selection rates and the mean logit, standardised; "
                        + "needs --stats); --by weights on the flattened expert weights (--stats then only sets the "
                        + "merge frequencies; without it they are uniform). Expert groups (n_group) are kept: "
                        + "clusters never cross a group, and correction biases merge with their experts."})
public final class ReduceCommand implements Callable<Integer> {
    @Spec
    CommandSpec spec;

    @Mixin
    SurgeryOptions options;

    @Option(names = "--experts", required = true, paramLabel = "E'", description = "Experts per MoE layer afterwards, < E.")
    int experts;

    @Option(names = "--by", defaultValue = "routing", paramLabel = "routing|weights",
            description = "What k-means clusters on. Default: ${DEFAULT-VALUE}.")
    String by;

    @Option(names = "--seed", defaultValue = "42", paramLabel = "S",
            description = "Root seed; each layer's k-means seed derives from it. Default: ${DEFAULT-VALUE}.")
    long seed;

    @Option(names = "--router", paramLabel = "FILE",
            description = "router.safetensors from 'retrain-router --expert-map OUT/expert-map.json' of an identical reduce "
                    + "run (same model, --experts, --by, --stats, --seed): its [E', D] gates replace the merged gate rows.")
    String router;

    @Override
    public Integer call() {
        ExpertReduceSurgery.By what = SurgeryRun.choice(spec, "--by", by,
                Map.of("routing", ExpertReduceSurgery.By.ROUTING, "weights", ExpertReduceSurgery.By.WEIGHTS));
        SurgeryRun run = new SurgeryRun(options);
        if (experts < 1 || experts >= run.config.num_experts) {
            throw new IllegalArgumentException("--experts must be in [1, " + (run.config.num_experts - 1)
                    + "] (fewer than the model's " + run.config.num_experts + "), got " + experts);
        }
        ExpertReduceSurgery surgery = new ExpertReduceSurgery(run.config, run.moeLayers.length, experts, what,
                what == ExpertReduceSurgery.By.ROUTING ? run.stats("--by routing") : run.statsIfGiven(), seed);
        ObjectNode settings = SurgeryRun.settings();
        settings.put("experts", experts);
        settings.put("by", by);
        settings.put("seed", seed);
        if (router != null) {
            settings.put("router", router);
        }
        Map<String, INDArray> gates = router == null ? Map.of() : run.gates(router, experts);
        if (run.planOnly(surgery)) {
            return 0;
        }
        run.execute("reduce", surgery, settings, gates);
        return 0;
    }
}
