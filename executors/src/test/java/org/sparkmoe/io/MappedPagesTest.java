package org.sparkmoe.io;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FileSystem;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/** Releasing a piece's mapped pages takes them out of this process's resident set, and they still read the same. */
class MappedPagesTest {
    private static final int FLOATS = 8 << 20;   // 32 MiB

    @TempDir
    Path tmp;

    /** This process's resident file-backed bytes (Linux: RssFile in /proc/self/status). */
    private static long rssFileBytes() throws IOException {
        for (String line : Files.readAllLines(Path.of("/proc/self/status"))) {
            if (line.startsWith("RssFile:")) {
                return Long.parseLong(line.replaceAll("[^0-9]", "")) * 1024;
            }
        }
        throw new IllegalStateException("no RssFile in /proc/self/status");
    }

    @Test
    void releasedPagesLeaveTheResidentSetAndReadTheSameAfter() throws IOException {
        LinkedHashMap<String, INDArray> tensors = new LinkedHashMap<>();
        tensors.put("w", Nd4j.linspace(-1, 1, FLOATS, DataType.FLOAT));
        SafeTensorsWriter.write(FileSystem.getLocal(new Configuration()),
                new org.apache.hadoop.fs.Path(tmp.resolve("model.safetensors").toUri()), tensors,
                Map.<String, String>of());
        MappedPages pages = new MappedPages();
        try (Checkpoint checkpoint = Checkpoint.open(new org.apache.hadoop.fs.Path(tmp.toUri()),
                new Configuration())) {
            INDArray w = checkpoint.recording(pages).stored("w");
            assertEquals(FLOATS * 4L, pages.bytes());
            double sum = w.sumNumber().doubleValue();       // touches every page of the map
            long resident = rssFileBytes();
            pages.release();
            long released = resident - rssFileBytes();
            assertTrue(released > FLOATS * 4L * 3 / 4, "released " + released + " of " + FLOATS * 4L + " bytes");
            assertEquals(sum, w.sumNumber().doubleValue(), "the same bytes, faulted in again");
            assertEquals(tensors.get("w"), w);
        }
    }
}
