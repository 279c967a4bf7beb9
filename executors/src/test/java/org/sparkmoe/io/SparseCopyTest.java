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
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/** The node cache copies, from a non-local file system, the blocks of the tensors read and nothing else, once. */
class SparseCopyTest {
    private static final int BLOCK = 1024;
    private static final int FLOATS = 4096;   // 16 KiB a tensor: 16 blocks

    @TempDir
    Path tmp;

    private final Configuration other = new Configuration();
    private String cacheBefore;
    private Path cache;

    @BeforeEach
    void useATemporaryNodeCache() {
        other.set("fs." + OtherSchemeFileSystem.SCHEME + ".impl", OtherSchemeFileSystem.class.getName());
        other.setBoolean("fs." + OtherSchemeFileSystem.SCHEME + ".impl.disable.cache", true);
        cache = tmp.resolve("node-cache");
        cacheBefore = System.getProperty(LocalFiles.CACHE_DIR_PROPERTY);
        System.setProperty(LocalFiles.CACHE_DIR_PROPERTY, cache.toString());
    }

    @AfterEach
    void restoreTheNodeCache() {
        if (cacheBefore == null) {
            System.clearProperty(LocalFiles.CACHE_DIR_PROPERTY);
        } else {
            System.setProperty(LocalFiles.CACHE_DIR_PROPERTY, cacheBefore);
        }
    }

    private static INDArray tensor(int seed) {
        return Nd4j.arange(FLOATS).castTo(DataType.FLOAT).addi(seed * 10_000f);
    }

    /** A three-tensor file on the local disk, and its path under the other scheme. */
    private org.apache.hadoop.fs.Path remoteFile() throws IOException {
        Path dir = Files.createDirectories(tmp.resolve("model"));
        LinkedHashMap<String, INDArray> tensors = new LinkedHashMap<>();
        for (int i = 0; i < 3; i++) {
            tensors.put("t" + i, tensor(i));
        }
        SafeTensorsWriter.write(FileSystem.getLocal(new Configuration()),
                new org.apache.hadoop.fs.Path(dir.resolve("model.safetensors").toUri()), tensors, Map.<String, String>of());
        return new org.apache.hadoop.fs.Path(OtherSchemeFileSystem.SCHEME + "://" + dir.toUri().getPath());
    }

    private static long bytesRead() {
        return FileSystem.getAllStatistics().stream()
                .filter(s -> OtherSchemeFileSystem.SCHEME.equals(s.getScheme()))
                .mapToLong(FileSystem.Statistics::getBytesRead).sum();
    }

    @Test
    void readingOneTensorCopiesItsBlocksOnceAndTheRestStaysAHole() throws IOException {
        org.apache.hadoop.fs.Path dir = remoteFile();
        FileSystem fs = dir.getFileSystem(other);
        long length = fs.getFileStatus(new org.apache.hadoop.fs.Path(dir, "model.safetensors")).getLen();
        long before = bytesRead();
        SparseCopy copy;
        try (LocalFiles files = LocalFiles.cached(fs, dir);
             SafeTensorsFile file = files.cachedFile("model.safetensors", BLOCK)) {
            long header = bytesRead() - before;
            assertTrue(header <= 2 * BLOCK, "opening reads the header's blocks, read " + header);
            assertEquals(tensor(1), file.readFloat("t1"));
            long read = bytesRead() - before;
            // the header's blocks, t1's 16 blocks, and at most one block each side of t1
            assertTrue(read <= header + (FLOATS * 4L) + 2L * BLOCK, "read " + read + " bytes of " + length);
            assertTrue(read >= FLOATS * 4L && read < length / 2, "read " + read + " bytes of " + length);
            assertEquals(tensor(1), file.readFloat("t1"));
            assertEquals(read, bytesRead() - before, "a tensor already copied is not read again");
            copy = new SparseCopy(fs, new org.apache.hadoop.fs.Path(dir, "model.safetensors"), file.path(), length,
                    BLOCK);
        }
        long blocks = (length + BLOCK - 1) / BLOCK;
        int missing = copy.missingBlocks();
        assertTrue(missing > 0 && missing < blocks, missing + " of " + blocks + " blocks missing");

        long again = bytesRead();
        copy.fill(0, length / 3);        // another JVM: its own view, the same block map on disk
        long others = bytesRead() - again;
        assertTrue(others < length / 3, "blocks on disk are not copied again; read " + others);
        copy.fill(0, length);
        assertEquals(0, copy.missingBlocks());
        try (LocalFiles files = LocalFiles.cached(fs, dir);
             SafeTensorsFile file = files.cachedFile("model.safetensors", BLOCK)) {
            long complete = bytesRead();
            for (int i = 0; i < 3; i++) {
                assertEquals(tensor(i), file.readFloat("t" + i));
            }
            assertEquals(complete, bytesRead(), "a complete copy reads nothing from the source");
        }
    }
}
