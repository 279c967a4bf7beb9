package org.sparkmoe.driver.eval;

import org.sparkmoe.calib.DivergenceStats;

/** Scored result of one {@link TokenChunk} against the baseline: its tokens' {@link DivergenceStats}. */
public final class ChunkDivergence {
    final int file;
    final int chunk;
    final DivergenceStats stats;

    ChunkDivergence(int file, int chunk, DivergenceStats stats) {
        this.file = file;
        this.chunk = chunk;
        this.stats = stats;
    }
}
