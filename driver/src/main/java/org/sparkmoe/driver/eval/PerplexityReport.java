package org.sparkmoe.driver.eval;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;
import com.fasterxml.jackson.databind.node.ObjectNode;
import org.sparkmoe.driver.layerwise.LayerBytes;

import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/** Per-file and overall NLL sums and scored-token counts; perplexity = exp(nll_sum / tokens). */
public final class PerplexityReport {
    private static final ObjectMapper JSON = new ObjectMapper().enable(SerializationFeature.INDENT_OUTPUT);

    /** NLL sum and scored tokens of one file (or of all files). */
    public record Totals(double nllSum, long tokens) {
        public double perplexity() {
            return Math.exp(nllSum / tokens);
        }
    }

    private final EvalPlan plan;
    private final Map<String, Totals> files;
    private final Totals all;
    /** After a layer-sequential pass, what each decoder layer stored; empty otherwise. */
    private final List<LayerBytes> layerwise;

    PerplexityReport(EvalPlan plan, Map<String, Totals> files, Totals all) {
        this(plan, files, all, List.of());
    }

    private PerplexityReport(EvalPlan plan, Map<String, Totals> files, Totals all, List<LayerBytes> layerwise) {
        this.plan = plan;
        this.files = files;
        this.all = all;
        this.layerwise = List.copyOf(layerwise);
    }

    /** This report with what each layer of a layer-sequential pass stored. */
    PerplexityReport withLayerwise(List<LayerBytes> stored) {
        return new PerplexityReport(plan, files, all, stored);
    }

    /** What each decoder layer of a layer-sequential pass stored, in layer order; empty for the whole-model run. */
    public List<LayerBytes> layerwise() {
        return layerwise;
    }

    public Map<String, Totals> files() {
        return files;
    }

    public Totals all() {
        return all;
    }

    /**
     * {@code {"model", "adapter" (when one was applied), "split", "window", "top_k", "files": {NAME: {nll_sum, tokens,
     * ppl}}, "all": {...}}}: the scores, the same bits with and without --layerwise.
     */
    public String toJson() {
        return text(scores());
    }

    /**
     * What {@code eval --out} writes: {@link #toJson}'s fields and, after a layer-sequential pass, a last field
     * {@code "layerwise"} with the bytes each layer stored ({@link LayerBytes#json}).
     */
    public String reportJson() {
        ObjectNode root = scores();
        if (!layerwise.isEmpty()) {
            root.set("layerwise", LayerBytes.json(layerwise));
        }
        return text(root);
    }

    private ObjectNode scores() {
        ObjectNode root = header(plan);
        ObjectNode perFile = root.putObject("files");
        files.forEach((name, totals) -> put(perFile.putObject(name), totals));
        put(root.putObject("all"), all);
        return root;
    }

    /** An eval report's first fields: "model", "adapter" and "peft_version" (when given), "split", "window", "top_k". */
    static ObjectNode header(EvalPlan plan) {
        ObjectNode root = JSON.createObjectNode();
        root.put("model", plan.model());
        if (plan.adapter() != null) {
            root.put("adapter", plan.adapter());
        }
        if (plan.peftVersion() != null) {
            root.put("peft_version", plan.peftVersion());
        }
        root.put("split", plan.split().toString());
        root.put("window", plan.window());
        root.put("top_k", plan.topK());
        return root;
    }

    /** {@code root} as indented JSON with a final newline. */
    static String text(ObjectNode root) {
        try {
            return JSON.writeValueAsString(root) + "\n";
        } catch (com.fasterxml.jackson.core.JsonProcessingException e) {
            throw new IllegalStateException("serialising an eval report", e);
        }
    }

    private static void put(ObjectNode node, Totals totals) {
        node.put("nll_sum", totals.nllSum());
        node.put("tokens", totals.tokens());
        node.put("ppl", totals.perplexity());
    }

    /** One summary line per file, then the overall line. */
    public String summary() {
        StringBuilder out = new StringBuilder();
        Map<String, Totals> rows = new LinkedHashMap<>(files);
        rows.put("all", all);
        rows.forEach((name, t) -> out.append(String.format("%-24s tokens %10d   nll/token %.5f   ppl %.4f%n",
                name, t.tokens(), t.nllSum() / t.tokens(), t.perplexity())));
        return out.toString();
    }
}
