package org.sparkmoe.tests;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.driver.SparkMoe;
import org.sparkmoe.io.SafeTensorsFile;

import java.io.PrintWriter;
import java.io.StringWriter;
import java.nio.file.Path;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** {@code sparkmoe logits} end to end: transformers' input_ids in, transformers' output names and values out. */
class LogitsCommandTest {

    @Test
    void writesTransformersConventionsMatchingTheReference(@TempDir Path dir) {
        Path out = dir.resolve("ours.safetensors");
        StringWriter err = new StringWriter();
        int rc = SparkMoe.execute(new PrintWriter(err, true), "logits", "--model", Fixtures.tinyModel().toString(),
                "--input-ids", Fixtures.reference().toString(), "--out", out.toString());
        assertEquals(0, rc, err.toString());
        try (SafeTensorsFile ours = SafeTensorsFile.open(out);
             SafeTensorsFile reference = SafeTensorsFile.open(Fixtures.reference())) {
            for (String name : reference.names()) {
                if (name.equals("input_ids")) {
                    continue;
                }
                INDArray expected = reference.readFloat(name);
                INDArray actual = ours.readFloat(name);
                assertArrayEquals(expected.shape(), actual.shape(), name);
                double maxDiff = expected.sub(actual).amaxNumber().doubleValue();
                assertTrue(maxDiff <= 2e-4, name + ": max |Δ| " + maxDiff);
            }
            assertEquals(reference.names().size() - 1, ours.names().size(), "tensor count: " + ours.names());
        }
    }
}
