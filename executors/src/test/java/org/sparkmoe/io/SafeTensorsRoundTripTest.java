package org.sparkmoe.io;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.stream.Collectors;
import java.util.stream.Stream;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.FilterFileSystem;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

class SafeTensorsRoundTripTest {

    @TempDir
    Path tmp;

    private final FileSystem fs = localFs();

    private static FileSystem localFs() {
        try {
            return FileSystem.getLocal(new Configuration());
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    private org.apache.hadoop.fs.Path hadoopPath(String name) {
        return new org.apache.hadoop.fs.Path(tmp.resolve(name).toUri());
    }

    private static INDArray arange(long... shape) {
        long n = 1;
        for (long d : shape) {
            n *= d;
        }
        return Nd4j.arange(n).castTo(DataType.FLOAT).reshape('c', shape).muli(0.5f).subi(1f);
    }

    @Test
    void floatsAndMetadataRoundTripInOrder() {
        INDArray w = arange(2, 3);        // [2, 3]
        INDArray cube = arange(2, 3, 4);  // [2, 3, 4]
        INDArray scalar = Nd4j.scalar(7.25f);
        LinkedHashMap<String, INDArray> tensors = new LinkedHashMap<>();
        tensors.put("z.w", w);
        tensors.put("a.cube", cube);
        tensors.put("scalar", scalar);
        SafeTensorsWriter.write(fs, hadoopPath("m.safetensors"), tensors, Map.of("format", "pt"));

        try (SafeTensorsFile file = SafeTensorsFile.open(tmp.resolve("m.safetensors"))) {
            assertEquals(List.of("z.w", "a.cube", "scalar"), new ArrayList<>(file.names()));
            assertEquals(Map.of("format", "pt"), file.metadata());
            assertEquals(new TensorInfo("z.w", DType.F32, new long[] {2, 3}, 0, 24), file.info("z.w"));
            assertEquals(new TensorInfo("a.cube", DType.F32, new long[] {2, 3, 4}, 24, 120), file.info("a.cube"));
            for (Map.Entry<String, INDArray> e : tensors.entrySet()) {
                INDArray read = file.readFloat(e.getKey());
                assertEquals(DataType.FLOAT, read.dataType());
                assertEquals('c', read.ordering());
                assertArrayEquals(e.getValue().shape(), read.shape());
                assertEquals(e.getValue(), read);
            }
        }
    }

    @Test
    void headerIsPaddedWithSpacesToAMultipleOfEight() throws IOException {
        LinkedHashMap<String, INDArray> tensors = new LinkedHashMap<>();
        tensors.put("x", arange(3));
        SafeTensorsWriter.write(fs, hadoopPath("p.safetensors"), tensors, Map.of());
        byte[] bytes = Files.readAllBytes(tmp.resolve("p.safetensors"));
        long headerLength = ByteBuffer.wrap(bytes).order(ByteOrder.LITTLE_ENDIAN).getLong(0);
        assertEquals(0, headerLength % 8);
        assertEquals(8 + headerLength + 3 * 4, bytes.length);
        String header = new String(bytes, 8, (int) headerLength, java.nio.charset.StandardCharsets.UTF_8);
        assertTrue(header.startsWith("{\"x\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,12]}}"), header);
        assertTrue(header.substring(header.lastIndexOf('}') + 1).isBlank(), header);
    }

    @Test
    void metadataIsWrittenInKeyOrderWhateverTheMapsOrder() throws IOException {
        LinkedHashMap<String, INDArray> tensors = new LinkedHashMap<>();
        tensors.put("x", arange(2));
        LinkedHashMap<String, String> zFirst = new LinkedHashMap<>();
        zFirst.put("z", "1");
        zFirst.put("format", "pt");
        zFirst.put("all", "2");
        LinkedHashMap<String, String> aFirst = new LinkedHashMap<>();
        aFirst.put("all", "2");
        aFirst.put("format", "pt");
        aFirst.put("z", "1");
        SafeTensorsWriter.write(fs, hadoopPath("z.safetensors"), tensors, zFirst);
        SafeTensorsWriter.write(fs, hadoopPath("a.safetensors"), tensors, aFirst);
        byte[] bytes = Files.readAllBytes(tmp.resolve("z.safetensors"));
        assertArrayEquals(bytes, Files.readAllBytes(tmp.resolve("a.safetensors")));
        String header = new String(bytes, 8, (int) ByteBuffer.wrap(bytes).order(ByteOrder.LITTLE_ENDIAN).getLong(0),
                java.nio.charset.StandardCharsets.UTF_8);
        assertTrue(header.startsWith("{\"__metadata__\":{\"all\":\"2\",\"format\":\"pt\",\"z\":\"1\"}"), header);
    }

    @Test
    void idsRoundTripAsI64BesideFloats() {
        long[] ids = {1, 0, 31999, Long.MAX_VALUE, -1, 42}; // [2, 3]
        INDArray w = arange(4, 2);
        SafeTensorsWriter.write(fs, hadoopPath("ids.safetensors"), List.of(
                new NamedTensor.Longs("input_ids", new long[] {2, 3}, ids),
                new NamedTensor.Floats("w", w)), Map.of());
        try (SafeTensorsFile file = SafeTensorsFile.open(tmp.resolve("ids.safetensors"))) {
            assertEquals(DType.I64, file.info("input_ids").dtype());
            assertArrayEquals(new long[] {2, 3}, file.info("input_ids").shape());
            assertArrayEquals(ids, file.readLongs("input_ids"));
            assertEquals(w, file.readFloat("w"));
            CheckpointFormatException e = assertThrows(CheckpointFormatException.class,
                    () -> file.readFloat("input_ids"));
            assertTrue(e.getMessage().contains("'input_ids' has dtype I64"), e.getMessage());
        }
    }

    @Test
    void tensorsLargerThanOneMappedPieceAreReadWhole() {
        INDArray w = arange(5, 7); // [5, 7] = 140 bytes, read in pieces of 16 bytes
        LinkedHashMap<String, INDArray> tensors = new LinkedHashMap<>();
        tensors.put("w", w);
        SafeTensorsWriter.write(fs, hadoopPath("pieces.safetensors"), tensors, Map.of());
        long[] ids = new long[9];
        for (int i = 0; i < ids.length; i++) {
            ids[i] = 1000L * i;
        }
        SafeTensorsWriter.write(fs, hadoopPath("ids.safetensors"),
                List.of(new NamedTensor.Longs("ids", new long[] {9}, ids)), Map.of());
        try (SafeTensorsFile f = SafeTensorsFile.open(tmp.resolve("pieces.safetensors"), 16);
             SafeTensorsFile g = SafeTensorsFile.open(tmp.resolve("ids.safetensors"), 16)) {
            assertEquals(w, f.readFloat("w"));
            assertArrayEquals(ids, g.readLongs("ids"));
        }
    }

    @Test
    void viewsAndFortranOrderArraysAreWrittenInRowMajorOrder() {
        INDArray full = arange(4, 6);
        INDArray fortran = full.dup('f');
        INDArray columns = full.get(org.nd4j.linalg.indexing.NDArrayIndex.all(),
                org.nd4j.linalg.indexing.NDArrayIndex.interval(1, 4)); // [4, 3] view with strides
        LinkedHashMap<String, INDArray> tensors = new LinkedHashMap<>();
        tensors.put("fortran", fortran);
        tensors.put("columns", columns);
        SafeTensorsWriter.write(fs, hadoopPath("v.safetensors"), tensors, Map.of());
        try (SafeTensorsFile file = SafeTensorsFile.open(tmp.resolve("v.safetensors"))) {
            assertEquals(full, file.readFloat("fortran"));
            assertEquals(columns.dup('c'), file.readFloat("columns"));
        }
    }

    @Test
    void overwritesAnExistingTargetAndLeavesNoTemporaryFile() throws IOException {
        org.apache.hadoop.fs.Path target = hadoopPath("o.safetensors");
        LinkedHashMap<String, INDArray> first = new LinkedHashMap<>();
        first.put("old", arange(2));
        SafeTensorsWriter.write(fs, target, first, Map.of());
        LinkedHashMap<String, INDArray> second = new LinkedHashMap<>();
        second.put("new", arange(3));
        SafeTensorsWriter.write(fs, target, second, Map.of());
        try (SafeTensorsFile file = SafeTensorsFile.open(tmp.resolve("o.safetensors"))) {
            assertEquals(List.of("new"), new ArrayList<>(file.names()));
        }
        assertEquals(List.of("o.safetensors"), visibleAndTemporaryFiles());
    }

    @Test
    void failedRenameDeletesTheTemporaryAndKeepsTheOldTarget() throws IOException {
        org.apache.hadoop.fs.Path target = hadoopPath("keep.safetensors");
        LinkedHashMap<String, INDArray> old = new LinkedHashMap<>();
        old.put("old", arange(2));
        SafeTensorsWriter.write(fs, target, old, Map.of());
        byte[] before = Files.readAllBytes(tmp.resolve("keep.safetensors"));

        FileSystem renameFails = new FilterFileSystem(fs) {
            @Override
            public boolean rename(org.apache.hadoop.fs.Path src, org.apache.hadoop.fs.Path dst) {
                return false;
            }

            @Override
            public boolean delete(org.apache.hadoop.fs.Path f, boolean recursive) throws IOException {
                if (f.equals(target)) {
                    throw new IOException("target must not be deleted in this test");
                }
                return super.delete(f, recursive);
            }
        };
        LinkedHashMap<String, INDArray> replacement = new LinkedHashMap<>();
        replacement.put("new", arange(3));
        UncheckedIOException e = assertThrows(UncheckedIOException.class,
                () -> SafeTensorsWriter.write(renameFails, target, replacement, Map.of()));
        assertTrue(e.getMessage().contains("keep.safetensors"), e.getMessage());
        assertArrayEquals(before, Files.readAllBytes(tmp.resolve("keep.safetensors")));
        assertEquals(List.of("keep.safetensors"), visibleAndTemporaryFiles());
    }

    @Test
    void rejectsDuplicateNamesAndNonFloatArrays() {
        IllegalArgumentException dup = assertThrows(IllegalArgumentException.class,
                () -> SafeTensorsWriter.write(fs, hadoopPath("d.safetensors"), List.of(
                        new NamedTensor.Floats("w", arange(2)), new NamedTensor.Floats("w", arange(2))), Map.of()));
        assertTrue(dup.getMessage().contains("'w' appears twice"), dup.getMessage());
        IllegalArgumentException dtype = assertThrows(IllegalArgumentException.class,
                () -> new NamedTensor.Floats("d", Nd4j.zeros(DataType.DOUBLE, 2)));
        assertTrue(dtype.getMessage().contains("'d'") && dtype.getMessage().contains("DOUBLE"), dtype.getMessage());
        assertFalse(Files.exists(tmp.resolve("d.safetensors")));
    }

    @Test
    void concurrentReadsOfOneFileAgree() throws Exception {
        LinkedHashMap<String, INDArray> tensors = new LinkedHashMap<>();
        for (int i = 0; i < 8; i++) {
            tensors.put("w" + i, arange(16, 8 + i).addi(i));
        }
        SafeTensorsWriter.write(fs, hadoopPath("c.safetensors"), tensors, Map.of());
        ExecutorService pool = Executors.newFixedThreadPool(8);
        try (SafeTensorsFile file = SafeTensorsFile.open(tmp.resolve("c.safetensors"), 64)) {
            List<Future<Boolean>> results = new ArrayList<>();
            for (int round = 0; round < 64; round++) {
                String name = "w" + (round % 8);
                results.add(pool.submit(() -> tensors.get(name).equals(file.readFloat(name))));
            }
            for (Future<Boolean> r : results) {
                assertTrue(r.get());
            }
        } finally {
            pool.shutdownNow();
        }
    }

    @Test
    void readingAfterCloseFailsClearly() {
        LinkedHashMap<String, INDArray> tensors = new LinkedHashMap<>();
        tensors.put("w", arange(2));
        SafeTensorsWriter.write(fs, hadoopPath("closed.safetensors"), tensors, Map.of());
        SafeTensorsFile file = SafeTensorsFile.open(tmp.resolve("closed.safetensors"));
        file.close();
        IllegalStateException e = assertThrows(IllegalStateException.class, () -> file.readFloat("w"));
        assertTrue(e.getMessage().contains("closed.safetensors is closed"), e.getMessage());
    }

    /** Every file in tmp, hidden temporaries included, except Hadoop's .crc checksum files. */
    private List<String> visibleAndTemporaryFiles() throws IOException {
        try (Stream<Path> files = Files.list(tmp)) {
            return files.map(p -> p.getFileName().toString()).filter(n -> !n.endsWith(".crc")).sorted()
                    .collect(Collectors.toList());
        }
    }
}
