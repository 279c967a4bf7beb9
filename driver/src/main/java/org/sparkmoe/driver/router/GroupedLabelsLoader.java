package org.sparkmoe.driver.router;

import org.deeplearning4j.core.loader.DataSetLoader;
import org.deeplearning4j.core.loader.impl.SerializedDataSetLoader;
import org.nd4j.common.loader.Source;
import org.nd4j.linalg.dataset.DataSet;
import org.nd4j.linalg.factory.Nd4j;

import java.io.IOException;

/**
 * Loads an exported router DataSet (features [N, D], teacher labels [N, E]) and, with a membership matrix
 * [E, E'] from an expert map, replaces the labels by the teacher distribution summed over each group
 * (labels · membership, [N, E']). Runs on the executors inside DL4J's fitPaths.
 */
final class GroupedLabelsLoader implements DataSetLoader {
    private final float[][] membership; // [E, E'], or null to keep the labels

    GroupedLabelsLoader(float[][] membership) {
        this.membership = membership;
    }

    @Override
    public DataSet load(Source source) throws IOException {
        DataSet data;
        try {
            data = new SerializedDataSetLoader().load(source);
        } catch (IOException | RuntimeException e) {
            // a truncated file gives a bare EOFException (under DL4J's "Error loading DataSet"): name the file
            Throwable root = e;
            while (root.getCause() != null && root.getCause() != root) {
                root = root.getCause();
            }
            throw new IOException("router data file " + source.getPath() + " is truncated or not a DataSet file ("
                    + root.getClass().getSimpleName() + (root.getMessage() == null ? "" : ": " + root.getMessage()
                    .lines().findFirst().orElse("")) + "); export it again with calibrate --export-router-data", e);
        }
        if (membership == null) {
            return data;
        }
        if (data.getLabels().size(1) != membership.length) {
            throw new IllegalArgumentException(source.getPath() + ": labels have " + data.getLabels().size(1)
                    + " experts, the expert map has " + membership.length);
        }
        return new DataSet(data.getFeatures(), data.getLabels().mmul(Nd4j.create(membership)));
    }
}
