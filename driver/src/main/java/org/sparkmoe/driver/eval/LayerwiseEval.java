package org.sparkmoe.driver.eval;

import org.apache.spark.api.java.JavaRDD;
import org.apache.spark.api.java.JavaSparkContext;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.driver.layerwise.HiddenChunk;
import org.sparkmoe.driver.layerwise.LayerBytes;
import org.sparkmoe.driver.layerwise.LayerwisePass;
import org.sparkmoe.driver.layerwise.LayerwisePlan;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.model.LayerCache;
import org.sparkmoe.model.ModelEnds;
import org.sparkmoe.model.Perplexity;

import java.util.List;

/**
 * Eval's scoring stage as a layer-sequential pass ({@link LayerwisePass}): every decoder layer over every chunk, one
 * layer at a time, then a last map applies the final norm and the LM head and returns each chunk's NLL sum, as
 * {@link EvalJob}'s whole-model tasks do: the same bits.
 */
final class LayerwiseEval {
    private LayerwiseEval() {
    }

    /** The chunks' NLL sums and what each layer stored. */
    record Scored(List<ChunkNll> chunks, List<LayerBytes> stored) {
    }

    /** The chunks' NLL sums, one layer at a time. */
    static Scored score(JavaSparkContext sc, EvalPlan plan, LayerwisePlan pass, ModelConfig config,
                        JavaRDD<TokenChunk> chunks) {
        LayerwisePass.Output out = LayerwisePass.run(sc, "eval",
                new LayerwisePass.Model(plan.model(), plan.device(), plan.topK()), pass, config,
                config.num_hidden_layers, chunks.map(c -> HiddenChunk.of(c.file, c.chunk, c.windows)), null, null);
        sc.setJobDescription("eval --layerwise: final norm, LM head and NLL");
        List<ChunkNll> scored = out.last().map(c -> nll(plan, c)).collect();
        out.last().unpersist(false);
        return new Scored(scored, out.stored());
    }

    private static ChunkNll nll(EvalPlan plan, HiddenChunk chunk) {
        double nll = 0;
        try (LayerCache.Lease<ModelEnds> ends = LayerCache.ends(plan.model(), plan.device())) {
            INDArray normed = ends.get().finalNorm(chunk.hidden());                          // [B·S, D]
            for (double windowNll : Perplexity.windowNll(ends.get(), normed, chunk.windows())) {
                nll += windowNll;
            }
        }
        return new ChunkNll(chunk.file(), chunk.chunk(), nll,
                (long) chunk.windows().length * Perplexity.scoredTokens(plan.window()));
    }
}
