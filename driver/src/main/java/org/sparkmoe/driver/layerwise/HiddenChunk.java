package org.sparkmoe.driver.layerwise;

import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.calib.ImportanceSums;
import org.sparkmoe.kernels.Flat;

/**
 * A job's chunk of windows on its way through a layer-sequential pass: its windows and their hidden states after some
 * layer, exact float32 (what the whole-model forward hands from one layer to the next; rounding them to bf16 would
 * change the bits of the result). Before the embedding the hidden states are null. When a pass collects importance
 * sums, the chunk a layer's step made carries what that layer showed its linear layers on it.
 */
public final class HiddenChunk {
    final int file;
    final int chunk;
    final int[][] windows; // [B, S]
    final float[] hidden;  // [B·S, D] row-major, or null before the embedding
    final ImportanceSums shown; // the sums of the inputs the step that made it showed (one layer's), or null

    /** Chunk {@code chunk} of file {@code file}: its windows [B, S], before the embedding. */
    public static HiddenChunk of(int file, int chunk, int[][] windows) {
        return new HiddenChunk(file, chunk, windows, null, null);
    }

    private HiddenChunk(int file, int chunk, int[][] windows, float[] hidden, ImportanceSums shown) {
        this.file = file;
        this.chunk = chunk;
        this.windows = windows;
        this.hidden = hidden;
        this.shown = shown;
    }

    public int file() {
        return file;
    }

    public int chunk() {
        return chunk;
    }

    /** @return [B, S] */
    public int[][] windows() {
        return windows;
    }

    /** The same chunk with the next layer's hidden states. */
    public HiddenChunk with(float[] next) {
        return with(next, null);
    }

    /** The same chunk with the next layer's hidden states and what that layer showed its linear layers (or null). */
    HiddenChunk with(float[] next, ImportanceSums shown) {
        return new HiddenChunk(file, chunk, windows, next, shown);
    }

    /** @return the hidden states [B·S, D] float32 */
    public INDArray hidden() {
        int tokens = tokens();
        return Flat.array(hidden, new long[] {tokens, hidden.length / tokens});
    }

    /** Tokens B·S. */
    int tokens() {
        return windows.length * windows[0].length;
    }
}
