package org.sparkmoe.driver.eval;

import org.apache.hadoop.fs.Path;
import org.apache.spark.api.java.JavaRDD;
import org.apache.spark.api.java.JavaSparkContext;
import org.sparkmoe.adapter.ModelCache;
import org.sparkmoe.calib.DivergenceStats;
import org.sparkmoe.driver.data.TokenizeStage;
import org.sparkmoe.driver.data.TokenizedFile;
import org.sparkmoe.driver.layerwise.LayerwisePlan;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.model.ModelFolder;
import org.sparkmoe.model.KlDivergence;
import org.sparkmoe.model.Perplexity;
import org.sparkmoe.text.Windows;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Distributed windowed perplexity. Stage 1 tokenizes each file's split (one task per file; small inputs are
 * tokenized and cut into chunks on the driver instead, with no stage); stage 2 scores fixed chunks of windows
 * spread over the partitions, each executor JVM loading the model once. Chunk NLL sums
 * come back to the driver and are added in (file, chunk) order, so the report is identical for any
 * partitioning or number of executors. Against a baseline ({@link #runAgainst}) the same chunks are compared
 * with the baseline's logits instead; {@code eval --mute-experts} is such a comparison, of the μMoE adapter with
 * some experts muted against the same adapter unmuted.
 */
public final class EvalJob {
    private EvalJob() {
    }

    public static PerplexityReport run(JavaSparkContext sc, EvalPlan plan) {
        TokenizeStage.Tokenized tokenized = tokenize(sc, plan, "");
        List<ChunkNll> scored = chunks(sc, tokenized, plan)
                .map(chunk -> score(plan, chunk))
                .collect();
        tokenized.files().unpersist(false);
        return report(plan, scored);
    }

    /**
     * As {@link #run}, as a layer-sequential pass ({@link LayerwiseEval}): the same chunks, the same report, bit for
     * bit ({@link PerplexityReport#toJson}), with each executor holding one decoder layer at a time instead of the
     * model; the report also holds what each layer stored ({@link PerplexityReport#layerwise}).
     */
    public static PerplexityReport runLayerwise(JavaSparkContext sc, EvalPlan plan, LayerwisePlan pass) {
        TokenizeStage.Tokenized tokenized = tokenize(sc, plan, " one layer at a time");
        ModelConfig config = ModelFolder.readConfig(new Path(plan.model()), sc.hadoopConfiguration());
        LayerwiseEval.Scored scored = LayerwiseEval.score(sc, plan, pass, config, chunks(sc, tokenized, plan));
        tokenized.files().unpersist(false);
        return report(plan, scored.chunks()).withLayerwise(scored.stored());
    }

    /**
     * As {@link #run}, against {@code baseline}: each task holds both models (two {@link ModelCache} leases) and
     * compares their logits token by token ({@link KlDivergence}); per chunk, its {@link DivergenceStats} come back
     * and the driver merges them per file and overall (exact sums, every per-token KL kept for the percentiles).
     */
    public static DivergenceReport runAgainst(JavaSparkContext sc, EvalPlan plan, Baseline baseline) {
        TokenizeStage.Tokenized tokenized = tokenize(sc, plan, " against the baseline " + baseline.model());
        List<ChunkDivergence> scored = chunks(sc, tokenized, plan)
                .map(chunk -> compare(plan, baseline, chunk))
                .collect();
        tokenized.files().unpersist(false);
        Map<String, DivergenceStats> files = new LinkedHashMap<>();
        DivergenceStats all = new DivergenceStats();
        for (int f = 0; f < plan.data().size(); f++) {
            DivergenceStats file = new DivergenceStats();
            for (ChunkDivergence c : scored) {
                if (c.file == f) {
                    file.merge(c.stats);
                }
            }
            String name = new Path(plan.data().get(f)).getName();
            if (!Double.isFinite(file.nllSum()) || !Double.isFinite(file.baselineNllSum())) {
                throw new IllegalArgumentException(subject(plan) + " or the baseline " + baseline.model()
                        + " gives a non-finite NLL on " + name + "; no report written");
            }
            files.put(name, file);
            all.merge(file);
        }
        return new DivergenceReport(plan, baseline, files, all);
    }

    private static TokenizeStage.Tokenized tokenize(JavaSparkContext sc, EvalPlan plan, String against) {
        TokenizeStage.Tokenized tokenized = TokenizeStage.run(sc, "eval", plan.model(), plan.data(), plan.split(),
                plan.window());
        long windows = Arrays.stream(tokenized.windowCounts(plan.window())).sum();
        sc.setJobDescription("eval: score " + windows + " windows of " + plan.window() + " tokens in chunks of "
                + plan.batchWindows() + " on " + plan.partitions() + " partitions" + against);
        return tokenized;
    }

    /**
     * The chunks spread over the partitions: cut on the driver and parallelized when the files were tokenized there
     * (no shuffle stage before the scoring), else cut where the files are and repartitioned.
     */
    private static JavaRDD<TokenChunk> chunks(JavaSparkContext sc, TokenizeStage.Tokenized tokenized, EvalPlan plan) {
        if (tokenized.onDriver() != null) {
            List<TokenChunk> all = new ArrayList<>();
            for (TokenizedFile file : tokenized.onDriver()) {
                all.addAll(chunks(file, plan.window(), plan.batchWindows()));
            }
            return sc.parallelize(all, plan.partitions());
        }
        return tokenized.files()
                .flatMap(t -> chunks(t, plan.window(), plan.batchWindows()).iterator())
                .repartition(plan.partitions());
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
        try (ModelCache.Lease model = ModelCache.lease(plan.model(), plan.adapter(), plan.peftVersion(), plan.muted(),
                plan.device())) {
            for (double windowNll : Perplexity.windowNll(model.model(), chunk.windows, plan.topK())) {
                nll += windowNll;
            }
        }
        return new ChunkNll(chunk.file, chunk.chunk, nll,
                (long) chunk.windows.length * Perplexity.scoredTokens(plan.window()));
    }

    private static ChunkDivergence compare(EvalPlan plan, Baseline baseline, TokenChunk chunk) {
        KlDivergence.Tokens tokens;
        try (ModelCache.Lease original = ModelCache.lease(baseline.model(), baseline.adapter(),
                baseline.adapter() == null ? null : plan.peftVersion(), plan.device());
             ModelCache.Lease model = ModelCache.lease(plan.model(), plan.adapter(), plan.peftVersion(), plan.muted(),
                     plan.device())) {
            tokens = KlDivergence.of(original.model(), baseline.topK(), model.model(), plan.topK(), chunk.windows);
        }
        return new ChunkDivergence(chunk.file, chunk.chunk, new DivergenceStats().add(tokens.kld(), tokens.nll(),
                tokens.baselineNll(), tokens.sameTop()));
    }

    /** "model M" or "model M with adapter A": what a non-finite result is blamed on. */
    static String subject(EvalPlan plan) {
        return "model " + plan.model() + (plan.adapter() == null ? "" : " with adapter " + plan.adapter())
                + (plan.muted().isEmpty() ? "" : " muting experts " + plan.muted());
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
