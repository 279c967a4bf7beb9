package org.sparkmoe.driver.demo;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import org.apache.hadoop.fs.Path;
import org.sparkmoe.driver.eval.PerplexityReport;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.stream.Collectors;

/**
 * The demo's closing summary: the perplexity table (per file and all: base, with the LoRA, after the surgery, with
 * the relative change), the wall time of each stage and the paths of everything written; as text and as JSON.
 */
final class DemoSummary {
    private DemoSummary() {
    }

    /** The table, the stage times and the outputs, as printed on stdout and written to summary.txt. */
    static String text(DemoPlan plan, DemoResult result) {
        String lora = "LoRA " + new Path(plan.trainFile()).getName();
        String topk = "topk M=" + plan.surgeryTopK() + " measured";
        List<String[]> rows = new ArrayList<>();
        rows.add(new String[] {"file", "base", lora, topk});
        for (String name : names(result.base())) {
            rows.add(new String[] {name, ppl(totals(result.base(), name)),
                    change(totals(result.base(), name), totals(result.lora(), name)),
                    change(totals(result.base(), name), totals(result.surgery(), name))});
        }
        StringBuilder out = new StringBuilder();
        out.append(String.format(Locale.ROOT, "Perplexity on the test split (window %d, %d scored tokens):%n",
                plan.window(), result.base().all().tokens()));
        out.append(table(rows, true));
        out.append(String.format(Locale.ROOT, "topk α per MoE layer: %s%n%n", Arrays.stream(result.alpha())
                .mapToObj(a -> String.format(Locale.ROOT, "%.3f", a)).collect(Collectors.joining(", "))));
        List<String[]> times = new ArrayList<>();
        times.add(new String[] {"stage", "seconds"});
        result.seconds().forEach((stage, s) -> times.add(new String[] {stage, String.format(Locale.ROOT, "%.1f", s)}));
        out.append(table(times, true)).append('\n');
        out.append("Written:\n");
        List<String[]> written = new ArrayList<>();
        result.outputs().forEach((label, uri) -> written.add(new String[] {"  " + label, uri}));
        out.append(table(written, false));
        return out.toString();
    }

    /**
     * {@code {"model", "data", "window", "split", "train": {...}, "surgery": {..., "alpha"}, "perplexity": {"base",
     * "lora", "surgery": {NAME: ppl, ..., "all": ppl}}, "seconds": {STAGE: s}, "outputs": {LABEL: URI}}}.
     */
    static String json(DemoPlan plan, DemoResult result) {
        ObjectMapper mapper = new ObjectMapper().enable(SerializationFeature.INDENT_OUTPUT);
        ObjectNode root = mapper.createObjectNode();
        root.put("model", plan.model());
        ArrayNode data = root.putArray("data");
        plan.data().forEach(data::add);
        root.put("window", plan.window());
        root.put("split", "test");
        ObjectNode train = root.putObject("train");
        train.put("file", new Path(plan.trainFile()).getName());
        train.put("split", "valid");
        train.put("steps", plan.trainSteps());
        train.put("rank", DemoPlan.RANK);
        train.put("alpha", DemoPlan.ALPHA);
        train.put("lr", DemoPlan.LEARNING_RATE);
        ObjectNode surgery = root.putObject("surgery");
        surgery.put("command", "topk");
        surgery.put("top_k", plan.surgeryTopK());
        surgery.put("rescale", DemoPlan.rescale(plan.config()).name().toLowerCase());
        ArrayNode alpha = surgery.putArray("alpha");
        Arrays.stream(result.alpha()).forEach(alpha::add);
        ObjectNode ppl = root.putObject("perplexity");
        Map<String, PerplexityReport> variants = new LinkedHashMap<>();
        variants.put("base", result.base());
        variants.put("lora", result.lora());
        variants.put("surgery", result.surgery());
        variants.forEach((variant, report) -> {
            ObjectNode node = ppl.putObject(variant);
            names(report).forEach(name -> node.put(name, totals(report, name).perplexity()));
        });
        ObjectNode seconds = root.putObject("seconds");
        result.seconds().forEach(seconds::put);
        ObjectNode outputs = root.putObject("outputs");
        result.outputs().forEach(outputs::put);
        try {
            return mapper.writeValueAsString(root) + "\n";
        } catch (JsonProcessingException e) {
            throw new IllegalStateException("serialising the demo summary", e);
        }
    }

    /** The file names, then "all". */
    private static List<String> names(PerplexityReport report) {
        List<String> names = new ArrayList<>(report.files().keySet());
        names.add("all");
        return names;
    }

    private static PerplexityReport.Totals totals(PerplexityReport report, String name) {
        return "all".equals(name) ? report.all() : report.files().get(name);
    }

    private static String ppl(PerplexityReport.Totals t) {
        return String.format(Locale.ROOT, "%.4f", t.perplexity());
    }

    private static String change(PerplexityReport.Totals base, PerplexityReport.Totals variant) {
        return String.format(Locale.ROOT, "%.4f (%+.1f%%)", variant.perplexity(),
                100 * (variant.perplexity() / base.perplexity() - 1));
    }

    /** Columns two spaces apart, the first left-aligned, the others right-aligned if {@code numbers}. */
    private static String table(List<String[]> rows, boolean numbers) {
        int[] width = new int[rows.get(0).length];
        for (String[] row : rows) {
            for (int c = 0; c < row.length; c++) {
                width[c] = Math.max(width[c], row[c].length());
            }
        }
        StringBuilder out = new StringBuilder();
        for (String[] row : rows) {
            StringBuilder line = new StringBuilder();
            for (int c = 0; c < row.length; c++) {
                String cell = c == 0 || !numbers ? String.format("%-" + width[c] + "s", row[c])
                        : String.format("%" + width[c] + "s", row[c]);
                line.append(c == 0 ? "" : "  ").append(cell);
            }
            out.append(line.toString().stripTrailing()).append('\n');
        }
        return out.toString();
    }
}
