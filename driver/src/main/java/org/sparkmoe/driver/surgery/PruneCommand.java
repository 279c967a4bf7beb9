package org.sparkmoe.driver.surgery;

import com.fasterxml.jackson.databind.node.ObjectNode;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.surgery.ExpertPruneSurgery;
import org.sparkmoe.surgery.ExpertScores;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

import java.util.Locale;
import java.util.Map;
import java.util.concurrent.Callable;

/** {@code sparkmoe surgery prune}: keep the E' best-scoring experts of each MoE layer, drop the others. */
@Command(name = "prune", mixinStandardHelpOptions = true, sortOptions = false,
        description = {"Keep each MoE layer's E' highest-scoring experts by calibrate's expert-scores.json (--stats) and "
                + "drop the others with their gate rows (and router-bias / correction-bias entries); the kept experts' "
                + "weights are copied unchanged, a shared expert stays. Writes the E'-expert checkpoint and "
                + "OUT/expert-map.json, the map 'retrain-router --expert-map' takes (each dropped expert joins the kept "
                + "expert with the closest gate row).",
                "reap: mean routing weight × expert output norm over the routed tokens (REAP); frequency: routed "
                        + "tokens / tokens; ean: Σ expert output norm over the routed tokens. With group-limited "
                        + "routing every expert group keeps E'/n_group experts.",
                "--global: L·E' experts over all L MoE layers (each layer's scores as shares of its sum), at least "
                        + "--min-experts-per-layer per layer; every layer holds the most any layer keeps, the rest "
                        + "masked by a selection bias (gpt_oss, glm4_moe, deepseek_v3, kimi_k2 only)."})
public final class PruneCommand implements Callable<Integer> {
    private static final Map<String, ExpertScores.Method> METHODS = Map.of("reap", ExpertScores.Method.REAP,
            "frequency", ExpertScores.Method.FREQUENCY, "ean", ExpertScores.Method.EAN);

    @Mixin
    SurgeryOptions options;

    @Option(names = "--experts", required = true, paramLabel = "E'",
            description = "Experts per MoE layer afterwards: at least num_experts_per_tok, fewer than E.")
    int experts;

    @Option(names = "--method", defaultValue = "reap", paramLabel = "reap|frequency|ean",
            description = "What the experts are ranked by. Default: ${DEFAULT-VALUE}.")
    String method;

    @Option(names = "--global",
            description = "Keep L·E' experts over all L MoE layers instead of E' in each; layers that keep fewer than "
                    + "the most hold the others masked (never selected).")
    boolean global;

    @Option(names = "--min-experts-per-layer", paramLabel = "F",
            description = "With --global: experts every layer keeps at least, in [num_experts_per_tok, E']. "
                    + "Default: num_experts_per_tok.")
    Integer minPerLayer;

    @Option(names = "--router", paramLabel = "FILE",
            description = "router.safetensors from 'retrain-router --expert-map OUT/expert-map.json' of an identical prune "
                    + "run (same model, --stats, --experts, --method): its [E', D] gates replace the kept gate rows.")
    String router;

    @Override
    public Integer call() {
        ExpertScores.Method by = METHODS.get(method);
        if (by == null) {
            throw new IllegalArgumentException("--method must be one of reap, frequency, ean, got " + method);
        }
        if (minPerLayer != null && !global) {
            throw new IllegalArgumentException("--min-experts-per-layer needs --global");
        }
        if (global && router != null) {
            throw new IllegalArgumentException("--router does not combine with --global: retrain-router refuses the "
                    + "expert map of a --global prune (its masked experts); use --router with a per-layer prune");
        }
        SurgeryRun run = new SurgeryRun(options);
        int floor = minPerLayer != null ? minPerLayer : run.config.num_experts_per_tok;
        ExpertPruneSurgery surgery = global
                ? ExpertPruneSurgery.global(run.config, experts, floor, run.expertScores(), by)
                : new ExpertPruneSurgery(run.config, experts, run.expertScores(), by);
        ObjectNode settings = SurgeryRun.settings();
        settings.put("experts", experts);
        settings.put("method", method.toLowerCase(Locale.ROOT));
        if (global) {
            settings.put("global", true);
            settings.put("min_experts_per_layer", floor);
        }
        settings.put("stats", options.stats);
        if (router != null) {
            settings.put("router", router);
        }
        Map<String, INDArray> gates = router == null ? Map.of() : run.gates(router, experts);
        if (run.planOnly(surgery)) {
            return 0;
        }
        run.execute("prune", surgery, settings, gates);
        return 0;
    }
}
