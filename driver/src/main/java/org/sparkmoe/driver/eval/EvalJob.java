package org.sparkmoe.driver.eval;

import org.apache.hadoop.fs.Path;
import org.apache.spark.api.java.JavaSparkContext;
import org.sparkmoe.adapter.ModelCache;
import org.sparkmoe.driver.data.TokenizeStage;
import org.sparkmoe.driver.data.TokenizedFile;
import org.sparkmoe.model.ModelFolder;
import org.sparkmoe.model.Perplexity;
import org.sparkmoe.text.Windows;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Distributed windowed perplexity. Stage 1 tokenizes each file's split (one task per file); stage 2 scores
 * fixed chunks of windows spread over the partitions, each executor JVM loading the model once. Chunk NLL sums
 * come back to the driver and are added in (file, chunk) order, so the report is identical for any
 * partitioning or number of executors.
 */
public final class EvalJob {
    private EvalJob() {
    }

    public static PerplexityReport run(JavaSparkContext sc, EvalPlan plan) {
        TokenizeStage.Tokenized tokenized = TokenizeStage.run(sc, "eval", plan.model(), plan.data(), plan.split(),
                plan.window());
        long windows = Arrays.stream(tokenized.windowCounts(plan.window())).sum();
        sc.setJobDescription("eval: score " + windows + " windows of " + plan.window() + " tokens in chunks of "
                + plan.batchWindows() + " on " + plan.partitions() + " partitions");
        List<ChunkNll> scored = tokenized.files()
                .flatMap(t -> chunks(t, plan.window(), plan.batchWindows()).iterator())
                .repartition(plan.partitions())
                .map(chunk -> score(plan, chunk))
                .collect();
        tokenized.files().unpersist(false);
        return report(plan, scored);
    }

    private static List<TokenChunk> chunks(TokenizedFile file, int window, int batchWindows) {
        int[][] all = Windows.cut(file.tokens, window);
        List<TokenChunk> out = new ArrayList<>();
        for (int start = 0, chunk = 0; start < all.length; start += batchWindows, chunk++) {
            int end = Math.min(all.length, start + batchWindows);
            out.add(new TokenChunk(file.file, chunk, Arrays.copyOfRange(all, start, end)));
        }
        return out;
    }

    private static ChunkNll score(EvalPlan plan, TokenChunk chunk) {
        double nll = 0;
        try (ModelCache.Lease model = ModelCache.lease(plan.model(), plan.adapter(), plan.peftVersion(),
                plan.device())) {
            for (double windowNll : Perplexity.windowNll(model.model(), chunk.windows, plan.topK())) {
                nll += windowNll;
            }
        }
        return new ChunkNll(chunk.file, chunk.chunk, nll,
                (long) chunk.windows.length * Perplexity.scoredTokens(plan.window()));
    }

    /** "model M" or "model M with adapter A": what a non-finite result is blamed on. */
    static String subject(EvalPlan plan) {
        return "model " + plan.model() + (plan.adapter() == null ? "" : " with adapter " + plan.adapter());
    }

    private static PerplexityReport report(EvalPlan plan, List<ChunkNll> scored) {
        List<ChunkNll> ordered = new ArrayList<>(scored);
        ordered.sort(Comparator.<ChunkNll>comparingInt(c -> c.file).thenComparingInt(c -> c.chunk));
        Map<String, PerplexityReport.Totals> files = new LinkedHashMap<>();
        double allNll = 0;
        long allTokens = 0;
        for (int f = 0; f < plan.data().size(); f++) {
            double nll = 0;
            long tokens = 0;
            for (ChunkNll c : ordered) {
                if (c.file == f) {
                    nll += c.nllSum;
                    tokens += c.tokens;
                }
            }
            String name = new Path(plan.data().get(f)).getName();
            if (!Double.isFinite(nll)) {
                throw new IllegalArgumentException(subject(plan) + " gives a non-finite NLL (" + nll + ") on " + name
                        + "; expected finite numbers (does it hold NaN or infinite weights?); no report written");
            }
            files.put(name, new PerplexityReport.Totals(nll, tokens));
            allNll += nll;
            allTokens += tokens;
        }
        return new PerplexityReport(plan, files, new PerplexityReport.Totals(allNll, allTokens));
    }
}
