package org.sparkmoe.calib;

import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.dataset.DataSet;
import org.nd4j.linalg.factory.Nd4j;
import org.sparkmoe.io.AtomicFile;
import org.sparkmoe.kernels.Softmax;

/**
 * Router training sets as DL4J Spark reads them: under {@code ROOT/layer-N/} (N the decoder layer index) one
 * file per window of tokens, each a {@link DataSet} written with {@link DataSet#save} (what
 * {@code SparkDl4jMultiLayer.fit(dir)} / {@code fitPaths(SparkUtils.listPaths(sc, dir))} load with their default
 * {@code SerializedDataSetLoader}). Features are the router inputs [N, D]; labels the teacher's routing
 * distribution softmax(logits) [N, E]. Every file of a layer holds the same number of examples (one window),
 * which is what {@code ParameterAveragingTrainingMaster}'s examples-per-file setting assumes.
 */
public final class RouterDataFiles {
    private RouterDataFiles() {
    }

    public static Path layerDir(Path root, int decoderLayer) {
        return new Path(root, "layer-" + decoderLayer);
    }

    /** {@code file-FFFF-window-WWWWWWW.bin}: sorted by input file, then position. */
    public static String fileName(int file, long window) {
        return String.format("file-%04d-window-%07d.bin", file, window);
    }

    /**
     * The router's scores of logits [N, E], float32 as the router computes them: softmax over each row, or (a sigmoid
     * router) the sigmoid of each logit, each in (0, 1) on its own.
     */
    public static INDArray teacher(INDArray logits, boolean sigmoid) {
        int n = (int) logits.size(0);
        int e = (int) logits.size(1);
        float[] z = logits.dup('c').data().asFloat();
        float[] p = new float[z.length];
        for (int t = 0; t < n; t++) {
            if (sigmoid) {
                for (int i = t * e; i < (t + 1) * e; i++) {
                    p[i] = (float) (1.0 / (1.0 + Math.exp(-z[i])));
                }
            } else {
                Softmax.row(z, t * e, e, p, t * e);
            }
        }
        return Nd4j.create(p, new long[] {n, e}, 'c');
    }

    /** Writes one DataSet (features [N, D], labels [N, E]) atomically. */
    public static void write(FileSystem fs, Path target, INDArray features, INDArray labels) {
        DataSet data = new DataSet(features.dup('c'), labels.dup('c'));
        AtomicFile.write(fs, target, out -> data.save(new NonClosing(out)));
    }

    /** DataSet.save closes its stream; AtomicFile closes it itself before renaming. */
    private static final class NonClosing extends java.io.FilterOutputStream {
        NonClosing(java.io.OutputStream out) {
            super(out);
        }

        @Override
        public void write(byte[] b, int off, int len) throws java.io.IOException {
            out.write(b, off, len);
        }

        @Override
        public void close() throws java.io.IOException {
            flush();
        }
    }
}
