package org.sparkmoe.driver.surgery;

import com.fasterxml.jackson.databind.node.ObjectNode;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.driver.Paths;
import org.sparkmoe.io.CheckpointLayout;
import org.sparkmoe.io.LocalFiles;
import org.sparkmoe.io.SafeTensorsFile;
import org.sparkmoe.surgery.ExpertReduceSurgery;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Spec;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.util.Arrays;
import java.util.LinkedHashMap;
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
        run.execute("reduce", surgery, settings, router == null ? Map.of() : gates(run));
        return 0;
    }

    /**
     * The retrained gates, checked: one [E', D] gate per MoE layer under its Hugging Face name (gpt-oss: and its
     * [E'] bias).
     */
    private Map<String, INDArray> gates(SurgeryRun run) {
        Path file = new Path(Paths.qualify(router, run.conf));
        CheckpointLayout layout = new CheckpointLayout(run.config.modelType);
        Map<String, INDArray> out = new LinkedHashMap<>();
        try {
            FileSystem fs = file.getFileSystem(run.conf);
            if (!fs.exists(file)) {
                throw new IllegalArgumentException("router file not found: " + file);
            }
            try (LocalFiles local = LocalFiles.of(fs, file.getParent());
                 SafeTensorsFile gates = SafeTensorsFile.open(local.get(file.getName()))) {
                for (int l : run.moeLayers) {
                    String name = layout.routerGate(l);
                    if (!gates.has(name)) {
                        throw new IllegalArgumentException(file + ": no tensor " + name);
                    }
                    INDArray gate = gates.readFloat(name);
                    if (gate.rank() != 2 || gate.size(0) != experts || gate.size(1) != run.config.hidden_size) {
                        throw new IllegalArgumentException(file + ": " + name + " is " + Arrays.toString(gate.shape())
                                + ", expected [" + experts + ", " + run.config.hidden_size + "]");
                    }
                    out.put(name, gate);
                    if (run.config.clamped_experts) {   // gpt-oss: the router's bias [E'] beside its weight
                        String bias = layout.routerBias(l);
                        if (!gates.has(bias)) {
                            throw new IllegalArgumentException(file + ": no tensor " + bias);
                        }
                        INDArray b = gates.readFloat(bias);
                        if (b.rank() != 1 || b.size(0) != experts) {
                            throw new IllegalArgumentException(file + ": " + bias + " is "
                                    + Arrays.toString(b.shape()) + ", expected [" + experts + "]");
                        }
                        out.put(bias, b);
                    }
                }
            }
        } catch (IOException e) {
            throw new UncheckedIOException("reading " + file + ": " + e.getMessage(), e);
        }
        return out;
    }
}
