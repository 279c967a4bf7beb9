package org.sparkmoe.driver.eval;

/** Scored result of one {@link TokenChunk}: the NLL sum (double) over its scored tokens. */
public final class ChunkNll {
    final int file;
    final int chunk;
    final double nllSum;
    final long tokens;

    ChunkNll(int file, int chunk, double nllSum, long tokens) {
        this.file = file;
        this.chunk = chunk;
        this.nllSum = nllSum;
        this.tokens = tokens;
    }
}
