package org.sparkmoe.driver.eval;

import com.fasterxml.jackson.databind.node.ObjectNode;
import org.sparkmoe.calib.DivergenceStats;

import java.util.LinkedHashMap;
import java.util.Locale;
import java.util.Map;

/**
 * Eval against a baseline, per file and overall, with llama.cpp's {@code perplexity --kl-divergence} definitions
 * (P the baseline, Q the model): mean KL(P ‖ Q) per token and its 99th percentile (and median, maximum), the share of
 * tokens where both rank the same token first ("Same top p"), PPL(Q), PPL(base), their difference and
 * ln(PPL(Q)/PPL(base)).
 */
public final class DivergenceReport {
    private final EvalPlan plan;
    private final Baseline baseline;
    private final Map<String, DivergenceStats> files;
    private final DivergenceStats all;

    DivergenceReport(EvalPlan plan, Baseline baseline, Map<String, DivergenceStats> files, DivergenceStats all) {
        this.plan = plan;
        this.baseline = baseline;
        this.files = files;
        this.all = all;
    }

    public Map<String, DivergenceStats> files() {
        return files;
    }

    public DivergenceStats all() {
        return all;
    }

    /** exp(mean NLL) of the model. */
    public static double perplexity(DivergenceStats s) {
        return Math.exp(s.nllSum() / s.tokens());
    }

    /** exp(mean NLL) of the baseline. */
    public static double baselinePerplexity(DivergenceStats s) {
        return Math.exp(s.baselineNllSum() / s.tokens());
    }

    /**
     * {@code {"model", "adapter" (when one was applied), "split", "window", "top_k", "baseline", "baseline_adapter"
     * (eval --mute-experts: the unmuted adapter), "baseline_top_k", "muted_experts" (eval --mute-experts),
     * "files": {NAME: {tokens, nll_sum, ppl, baseline_nll_sum, baseline_ppl, delta_ppl, ln_ppl_ratio, kld_mean,
     * kld_median, kld_p99, kld_max, same_top1}}, "all": {...}}}.
     */
    public String toJson() {
        ObjectNode root = PerplexityReport.header(plan);
        root.put("baseline", baseline.model());
        if (baseline.adapter() != null) {
            root.put("baseline_adapter", baseline.adapter());
        }
        root.put("baseline_top_k", baseline.topK());
        if (!plan.muted().isEmpty()) {
            root.put("muted_experts", plan.muted().toString());
        }
        ObjectNode perFile = root.putObject("files");
        files.forEach((name, stats) -> put(perFile.putObject(name), stats));
        put(root.putObject("all"), all);
        return PerplexityReport.text(root);
    }

    private static void put(ObjectNode node, DivergenceStats s) {
        double ppl = perplexity(s);
        double basePpl = baselinePerplexity(s);
        node.put("tokens", s.tokens());
        node.put("nll_sum", s.nllSum());
        node.put("ppl", ppl);
        node.put("baseline_nll_sum", s.baselineNllSum());
        node.put("baseline_ppl", basePpl);
        node.put("delta_ppl", ppl - basePpl);
        node.put("ln_ppl_ratio", (s.nllSum() - s.baselineNllSum()) / s.tokens());
        node.put("kld_mean", s.kldSum() / s.tokens());
        node.put("kld_median", s.kldPercentile(0.5));
        node.put("kld_p99", s.kldPercentile(0.99));
        node.put("kld_max", s.kldPercentile(1));
        node.put("same_top1", (double) s.sameTop() / s.tokens());
    }

    /** One summary line per file, then the overall line. */
    public String summary() {
        StringBuilder out = new StringBuilder();
        Map<String, DivergenceStats> rows = new LinkedHashMap<>(files);
        rows.put("all", all);
        rows.forEach((name, s) -> out.append(String.format(Locale.ROOT,
                "%-24s tokens %10d   ppl %.4f   baseline ppl %.4f   Δppl %+.4f   KLD mean %.6f   p99 %.6f"
                        + "   same top-1 %.3f%%%n", name, s.tokens(), perplexity(s), baselinePerplexity(s),
                perplexity(s) - baselinePerplexity(s), s.kldSum() / s.tokens(), s.kldPercentile(0.99),
                100.0 * s.sameTop() / s.tokens())));
        return out.toString();
    }
}
