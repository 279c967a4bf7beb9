package org.sparkmoe.model;

import org.apache.hadoop.conf.Configuration;
import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.kernels.Device;
import org.sparkmoe.kernels.Flat;
import org.sparkmoe.train.TinyModels;

import java.util.List;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The pieces a layer-sequential pass builds one at a time (the ends, one decoder layer) compute what the whole model
 * computes, bit for bit, and the per-JVM cache of them keeps at most two, never freeing one in use.
 */
class LayerCacheTest {
    private static final int[][] TOKENS = {{1, 17, 300, 5, 900, 42}, {7, 8, 9, 10, 11, 12}};

    @Test
    void layerByLayerEqualsTheWholeModelsFinalHidden() {
        String uri = TinyModels.folder(TinyModels.MIXTRAL).toString();
        MoeTransformer whole = ModelFolder.load(TinyModels.folder(TinyModels.MIXTRAL), new Configuration());
        INDArray hidden;
        try (LayerCache.Lease<ModelEnds> ends = LayerCache.ends(uri, Device.CPU)) {
            hidden = ends.get().embed(TOKENS);                                               // [B·S, D]
        }
        for (int l = 0; l < whole.layers().size(); l++) {
            try (LayerCache.Lease<LayerCache.Layer> layer = LayerCache.layer(uri, Device.CPU, l)) {
                hidden = layer.get().decoder().forward(hidden, TOKENS.length, TOKENS[0].length, layer.get().rope(), 2)
                        .hidden();
            }
            assertTrue(LayerCache.cachedKeys().size() <= LayerCache.MAX_PIECES, LayerCache.cachedKeys().toString());
        }
        try (LayerCache.Lease<ModelEnds> ends = LayerCache.ends(uri, Device.CPU)) {
            assertArrayEquals(Flat.floats(whole.finalHidden(TOKENS, 2)), Flat.floats(ends.get().finalNorm(hidden)));
        }
    }

    @Test
    void aHeldPieceIsNotEvictedAndStaysUsable() {
        String uri = TinyModels.folder(TinyModels.MIXTRAL).toString();
        INDArray x;
        try (LayerCache.Lease<ModelEnds> ends = LayerCache.ends(uri, Device.CPU)) {
            x = ends.get().embed(TOKENS);                                                    // [B·S, D]
        }
        try (LayerCache.Lease<LayerCache.Layer> held = LayerCache.layer(uri, Device.CPU, 0)) {
            float[] before = Flat.floats(held.get().decoder().forward(x, TOKENS.length, TOKENS[0].length,
                    held.get().rope(), 2).hidden());
            for (int l = 1; l < 4; l++) {
                LayerCache.layer(uri, Device.CPU, l).close();
            }
            List<String> keys = LayerCache.cachedKeys();
            assertEquals(List.of("cpu " + uri + " layer 0", "cpu " + uri + " layer 3"), keys);
            assertArrayEquals(before, Flat.floats(held.get().decoder().forward(x, TOKENS.length, TOKENS[0].length,
                    held.get().rope(), 2).hidden()), "the held layer's arrays were not freed");
        }
    }
}
