package org.sparkmoe.driver.eval;

import org.apache.spark.api.java.JavaRDD;
import org.apache.spark.api.java.JavaSparkContext;
import org.apache.spark.storage.StorageLevel;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.driver.LayerwisePlan;
import org.sparkmoe.kernels.Flat;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.model.DecoderLayer;
import org.sparkmoe.model.LayerCache;
import org.sparkmoe.model.ModelEnds;
import org.sparkmoe.model.Perplexity;
import org.sparkmoe.moe.MoeBlock;
import org.sparkmoe.routing.Routes;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.Iterator;
import java.util.List;
import java.util.function.BiFunction;

/**
 * Eval's scoring stage as a layer-sequential pass: the chunks' hidden states after the embedding are a persisted RDD
 * (memory and disk, serialised); each decoder layer is one narrow map that runs just that layer
 * ({@link LayerCache}: the executor maps that layer's weights alone) and persists its output, and the previous
 * layer's RDD is released once the next is computed; the last map applies the final norm and the LM head and returns
 * each chunk's NLL sum, as {@link EvalJob}'s whole-model tasks do. Every chunk meets the same operations in the same
 * order as in the whole-model forward, on exact float32 hidden states, so the report has the same bits.
 *
 * <p>With G expert groups an MoE layer takes three steps: a map runs the attention half and persists h and norm2(h);
 * G maps over that RDD (one per group: P·G tasks in one job) each route the chunk and run only its group's experts,
 * persisting the group's routed rows; then the RDDs are zipped partition by partition (no shuffle) and a map adds the
 * rows of every group in group order, which is the plan's order, through the MoE block's one combine
 * ({@link MoeBlock#combine}), and the shared expert: bit for bit the whole layer for any G.
 */
final class LayerwiseEval {
    private static final StorageLevel HIDDEN_STORAGE = StorageLevel.MEMORY_AND_DISK_SER();

    private LayerwiseEval() {
    }

    /** The chunks' NLL sums, one layer of {@code layers} at a time. */
    static List<ChunkNll> score(JavaSparkContext sc, EvalPlan plan, LayerwisePlan pass, ModelConfig config,
                                JavaRDD<TokenChunk> chunks) {
        if (pass.checkpointDir() != null) {
            sc.setCheckpointDir(pass.checkpointDir());
        }
        int layers = config.num_hidden_layers;
        JavaRDD<HiddenChunk> hidden = materialise(sc, "eval --layerwise: embedding",
                chunks.map(c -> embed(plan, c)).persist(HIDDEN_STORAGE));
        for (int l = 0; l < layers; l++) {
            int layer = l;
            String step = "eval --layerwise: layer " + l + " of " + layers;
            List<JavaRDD<?>> done = new ArrayList<>(List.of(hidden));   // released once the layer's output is computed
            JavaRDD<HiddenChunk> next = pass.expertGroups() > 1 && config.isMoeLayer(l)
                    ? grouped(sc, plan, pass.expertGroups(), l, hidden, step, done)
                    : hidden.map(c -> layer(plan, layer, c)).persist(HIDDEN_STORAGE);
            if (pass.checkpointsAfter(l)) {
                next.checkpoint();
            }
            materialise(sc, step, next);
            done.forEach(rdd -> rdd.unpersist(false));
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

    /**
     * MoE layer {@code l} with its experts in {@code groups} groups: runs the attention half and the groups' rows (two
     * jobs, persisted) and returns the persisted, not yet computed, RDD of the layer's output (the caller may still
     * checkpoint it); adds the intermediate RDDs to {@code done}, to release once that output is computed.
     */
    private static JavaRDD<HiddenChunk> grouped(JavaSparkContext sc, EvalPlan plan, int groups, int l,
                                                JavaRDD<HiddenChunk> hidden, String step, List<JavaRDD<?>> done) {
        JavaRDD<AttendedChunk> attended = materialise(sc, step + ": attention",
                hidden.map(c -> attend(plan, l, c)).persist(HIDDEN_STORAGE));
        List<JavaRDD<GroupRows>> rows = new ArrayList<>(groups);
        JavaRDD<GroupRows> all = null;
        for (int g = 0; g < groups; g++) {
            int group = g;
            JavaRDD<GroupRows> r = attended.map(c -> groupRows(plan, l, groups, group, c)).persist(HIDDEN_STORAGE);
            rows.add(r);
            all = all == null ? r : all.union(r);
        }
        materialise(sc, step + ": " + groups + " expert groups", all);
        JavaRDD<GroupRows[]> gathered = rows.get(0).map(r -> new GroupRows[] {r});
        for (int g = 1; g < groups; g++) {
            gathered = gathered.zipPartitions(rows.get(g), (a, b) -> zip(a, b, LayerwiseEval::append));
        }
        done.add(attended);
        done.addAll(rows);
        return attended.zipPartitions(gathered, (a, b) -> zip(a, b, (c, r) -> combine(plan, l, c, r)))
                .persist(HIDDEN_STORAGE);
    }

    private static AttendedChunk attend(EvalPlan plan, int l, HiddenChunk chunk) {
        try (LayerCache.Lease<LayerCache.Layer> layer = LayerCache.layer(plan.model(), plan.device(), l)) {
            DecoderLayer decoder = layer.get().decoder();
            INDArray h = decoder.attend(hidden(chunk), chunk.windows.length, chunk.windows[0].length,
                    layer.get().rope());                                                     // [B·S, D]
            return new AttendedChunk(chunk.with(Flat.floats(h)), Flat.floats(decoder.postNorm(h)));
        }
    }

    private static GroupRows groupRows(EvalPlan plan, int l, int groups, int g, AttendedChunk attended) {
        try (LayerCache.Lease<LayerCache.Layer> layer = LayerCache.layer(plan.model(), plan.device(), l)) {
            MoeBlock moe = layer.get().decoder().moe();
            INDArray normed = normed(attended);                                              // [B·S, D]
            int[] bounds = moe.expertGroups(groups);
            Routes routes = moe.route(normed, plan.topK());
            return new GroupRows(attended.chunk.file, attended.chunk.chunk,
                    Flat.floats(moe.expertOutputs(normed, routes, bounds[g], bounds[g + 1])));   // [N_g, D]
        }
    }

    private static HiddenChunk combine(EvalPlan plan, int l, AttendedChunk attended, GroupRows[] groups) {
        HiddenChunk chunk = attended.chunk;
        int length = 0;
        for (GroupRows g : groups) {
            if (g.file != chunk.file || g.chunk != chunk.chunk) {
                throw new IllegalStateException("expert group rows of chunk " + g.file + "/" + g.chunk
                        + " met chunk " + chunk.file + "/" + chunk.chunk + " (partitions out of step)");
            }
            length += g.rows.length;
        }
        float[] ys = new float[length];                                                      // [N, D] plan order
        int at = 0;
        for (GroupRows g : groups) {
            System.arraycopy(g.rows, 0, ys, at, g.rows.length);
            at += g.rows.length;
        }
        try (LayerCache.Lease<LayerCache.Layer> layer = LayerCache.layer(plan.model(), plan.device(), l)) {
            DecoderLayer decoder = layer.get().decoder();
            INDArray normed = normed(attended);                                              // [B·S, D]
            INDArray rows = Flat.array(ys, new long[] {ys.length / normed.size(1), normed.size(1)});
            Routes routes = decoder.moe().route(normed, plan.topK());
            INDArray moeOut = decoder.moe().combine(normed, routes, rows);                  // [B·S, D]
            return chunk.with(Flat.floats(decoder.finish(hidden(chunk), normed, moeOut)));
        }
    }

    private static GroupRows[] append(GroupRows[] gathered, GroupRows next) {
        GroupRows[] out = Arrays.copyOf(gathered, gathered.length + 1);
        out[gathered.length] = next;
        return out;
    }

    /** Pairs the elements of two partitions computed from the same parent partition (equal lengths). */
    private static <A, B, C> Iterator<C> zip(Iterator<A> a, Iterator<B> b, BiFunction<A, B, C> f) {
        return new Iterator<>() {
            @Override
            public boolean hasNext() {
                if (a.hasNext() != b.hasNext()) {
                    throw new IllegalStateException("zipped partitions of a layer-sequential pass differ in length");
                }
                return a.hasNext();
            }

            @Override
            public C next() {
                return f.apply(a.next(), b.next());
            }
        };
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

    private static INDArray normed(AttendedChunk attended) {
        return Flat.array(attended.normed, new long[] {attended.chunk.tokens(),
                attended.normed.length / attended.chunk.tokens()});
    }

    /** The chunk's hidden states as a [B·S, D] float32 array. */
    private static INDArray hidden(HiddenChunk chunk) {
        int tokens = chunk.tokens();
        return Flat.array(chunk.hidden, new long[] {tokens, chunk.hidden.length / tokens});
    }
}
