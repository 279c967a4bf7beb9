package org.sparkmoe.driver.eval;

import org.apache.spark.api.java.JavaRDD;
import org.apache.spark.api.java.JavaSparkContext;
import org.apache.spark.storage.StorageLevel;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.driver.LayerwisePlan;
import org.sparkmoe.kernels.Flat;
import org.sparkmoe.model.LayerCache;
import org.sparkmoe.model.ModelEnds;
import org.sparkmoe.model.Perplexity;

import java.util.List;

/**
 * Eval's scoring stage as a layer-sequential pass: the chunks' hidden states after the embedding are a persisted RDD
 * (memory and disk, serialised); each decoder layer is one narrow map that runs just that layer
 * ({@link LayerCache}: the executor maps that layer's weights alone) and persists its output, and the previous
 * layer's RDD is released once the next is computed; the last map applies the final norm and the LM head and returns
 * each chunk's NLL sum, as {@link EvalJob}'s whole-model tasks do. Every chunk meets the same operations in the same
 * order as in the whole-model forward, on exact float32 hidden states, so the report has the same bits.
 */
final class LayerwiseEval {
    private static final StorageLevel HIDDEN_STORAGE = StorageLevel.MEMORY_AND_DISK_SER();

    private LayerwiseEval() {
    }

    /** The chunks' NLL sums, one layer of {@code layers} at a time. */
    static List<ChunkNll> score(JavaSparkContext sc, EvalPlan plan, LayerwisePlan pass, int layers,
                                JavaRDD<TokenChunk> chunks) {
        if (pass.checkpointDir() != null) {
            sc.setCheckpointDir(pass.checkpointDir());
        }
        JavaRDD<HiddenChunk> hidden = materialise(sc, "eval --layerwise: embedding",
                chunks.map(c -> embed(plan, c)).persist(HIDDEN_STORAGE));
        for (int l = 0; l < layers; l++) {
            int layer = l;
            JavaRDD<HiddenChunk> next = hidden.map(c -> layer(plan, layer, c)).persist(HIDDEN_STORAGE);
            if (pass.checkpointsAfter(l)) {
                next.checkpoint();
            }
            materialise(sc, "eval --layerwise: layer " + l + " of " + layers, next);
            hidden.unpersist(false);
            hidden = next;
        }
        sc.setJobDescription("eval --layerwise: final norm, LM head and NLL");
        List<ChunkNll> scored = hidden.map(c -> nll(plan, c)).collect();
        hidden.unpersist(false);
        return scored;
    }

    /** Computes (and persists) every partition of {@code rdd} now, as one job; returns it. */
    private static <T> JavaRDD<T> materialise(JavaSparkContext sc, String description, JavaRDD<T> rdd) {
        sc.setJobDescription(description);
        rdd.count();
        return rdd;
    }

    private static HiddenChunk embed(EvalPlan plan, TokenChunk chunk) {
        try (LayerCache.Lease<ModelEnds> ends = LayerCache.ends(plan.model(), plan.device())) {
            return new HiddenChunk(chunk.file, chunk.chunk, chunk.windows,
                    Flat.floats(ends.get().embed(chunk.windows)));                          // [B·S, D]
        }
    }

    private static HiddenChunk layer(EvalPlan plan, int l, HiddenChunk chunk) {
        try (LayerCache.Lease<LayerCache.Layer> layer = LayerCache.layer(plan.model(), plan.device(), l)) {
            INDArray x = hidden(chunk);                                                      // [B·S, D]
            INDArray out = layer.get().decoder().forward(x, chunk.windows.length, chunk.windows[0].length,
                    layer.get().rope(), plan.topK()).hidden();                               // [B·S, D]
            return chunk.with(Flat.floats(out));
        }
    }

    private static ChunkNll nll(EvalPlan plan, HiddenChunk chunk) {
        double nll = 0;
        try (LayerCache.Lease<ModelEnds> ends = LayerCache.ends(plan.model(), plan.device())) {
            INDArray normed = ends.get().finalNorm(hidden(chunk));                           // [B·S, D]
            for (double windowNll : Perplexity.windowNll(ends.get(), normed, chunk.windows)) {
                nll += windowNll;
            }
        }
        return new ChunkNll(chunk.file, chunk.chunk, nll,
                (long) chunk.windows.length * Perplexity.scoredTokens(plan.window()));
    }

    /** The chunk's hidden states as a [B·S, D] float32 array. */
    private static INDArray hidden(HiddenChunk chunk) {
        int tokens = chunk.tokens();
        return Flat.array(chunk.hidden, new long[] {tokens, chunk.hidden.length / tokens});
    }
}
