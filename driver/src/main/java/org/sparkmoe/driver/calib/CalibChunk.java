package org.sparkmoe.driver.calib;

/**
 * The unit of calibration work: up to B consecutive windows of one file, forwarded together, starting at
 * window {@code firstWindow}. Its composition depends only on the file and the batch size, never on the
 * partitioning.
 */
public final class CalibChunk {
    final int file;
    final int firstWindow;
    final int[][] windows; // [B, S]

    CalibChunk(int file, int firstWindow, int[][] windows) {
        this.file = file;
        this.firstWindow = firstWindow;
        this.windows = windows;
    }
}
