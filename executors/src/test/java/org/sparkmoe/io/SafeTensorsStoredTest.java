package org.sparkmoe.io;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Random;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FileSystem;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;

/** {@link SafeTensorsFile#stored}: the stored type over a shared read-only map, equal to what readFloat widens. */
class SafeTensorsStoredTest {

    @TempDir
    Path tmp;

    /** Writes tensors t0..t(n-1) of random values in the given dtypes, [rows, 7] each. */
    private Path write(String file, List<DType> dtypes, int rows) throws IOException {
        Random rnd = new Random(file.hashCode());
        List<NamedTensor> tensors = new ArrayList<>();
        for (int t = 0; t < dtypes.size(); t++) {
            DType dtype = dtypes.get(t);
            float[] values = new float[rows * 7];
            for (int i = 0; i < values.length; i++) {
                values[i] = (float) rnd.nextGaussian();
            }
            tensors.add(new NamedTensor.Streamed("t" + t, dtype, new long[] {rows, 7}, out -> {
                ByteBuffer bytes = ByteBuffer.allocate(values.length * dtype.byteSize()).order(ByteOrder.LITTLE_ENDIAN);
                ElementEncoder.fromFloats(dtype, values, 0, values.length, bytes);
                out.write(bytes.array());
            }));
        }
        Path path = tmp.resolve(file);
        SafeTensorsWriter.write(FileSystem.getLocal(new Configuration()), new org.apache.hadoop.fs.Path(path.toUri()),
                tensors, Map.of());
        return path;
    }

    @Test
    void storedKeepsTheTypeAndWidensToWhatReadFloatReads() throws IOException {
        Path path = write("types.safetensors", List.of(DType.F32, DType.BF16, DType.F16, DType.F64), 5);
        try (SafeTensorsFile file = SafeTensorsFile.open(path)) {
            DataType[] expected = {DataType.FLOAT, DataType.BFLOAT16, DataType.HALF, DataType.DOUBLE};
            for (int t = 0; t < expected.length; t++) {
                INDArray stored = file.stored("t" + t);
                assertEquals(expected[t], stored.dataType(), "t" + t);
                assertArrayEquals(new long[] {5, 7}, stored.shape());
                assertArrayEquals(file.readFloat("t" + t).data().asFloat(),
                        stored.castTo(DataType.FLOAT).data().asFloat(), "t" + t);
            }
        }
    }

    @Test
    void arraysOutliveTheFileAndGarbageCollection() throws IOException {
        Path path = write("outlive.safetensors", List.of(DType.BF16, DType.F32), 64);
        float[] expected;
        INDArray stored;
        try (SafeTensorsFile file = SafeTensorsFile.open(path)) {
            expected = file.readFloat("t0").data().asFloat();
            stored = file.stored("t0");
        }
        for (int i = 0; i < 3; i++) {
            System.gc();
            byte[] churn = new byte[8 << 20];
            assertTrue(churn.length > 0);
        }
        assertArrayEquals(expected, stored.castTo(DataType.FLOAT).data().asFloat());
    }

    @Test
    void manyTensorsShareFewMapsAndReadBackExactly() throws IOException {
        List<DType> dtypes = new ArrayList<>();
        for (int t = 0; t < 40; t++) {
            dtypes.add(t % 2 == 0 ? DType.BF16 : DType.F32);
        }
        Path path = write("runs.safetensors", dtypes, 3);
        try (SafeTensorsFile file = SafeTensorsFile.open(path, 256)) {   // runs of ≤ 256 bytes: a few tensors each
            for (int t = 0; t < dtypes.size(); t++) {
                assertArrayEquals(file.readFloat("t" + t).data().asFloat(),
                        file.stored("t" + t).castTo(DataType.FLOAT).data().asFloat(), "t" + t);
            }
        }
    }

    @Test
    void integerTensorsAreRefusedByName() throws IOException {
        List<NamedTensor> ints = List.of(new NamedTensor.Longs("ids", new long[] {3}, new long[] {1, 2, 3}));
        Path intsPath = tmp.resolve("ids.safetensors");
        SafeTensorsWriter.write(FileSystem.getLocal(new Configuration()),
                new org.apache.hadoop.fs.Path(intsPath.toUri()), ints, Map.of());
        try (SafeTensorsFile file = SafeTensorsFile.open(intsPath)) {
            CheckpointFormatException e = assertThrows(CheckpointFormatException.class, () -> file.stored("ids"));
            assertTrue(e.getMessage().contains("'ids'"), e.getMessage());
        }
    }

    /** A stored bf16/f16 tensor written as its own type gives its bytes back; as F32 it gives what readFloat reads. */
    @Test
    void storedHalfTensorsAreWrittenAChunkAtATimeExactly() throws IOException {
        int rows = (NamedTensor.CHUNK_ELEMENTS / 7) * 2 + 3;                  // three chunks, the last one short
        Path path = write("halves.safetensors", List.of(DType.BF16, DType.F16), rows);
        try (SafeTensorsFile file = SafeTensorsFile.open(path)) {
            for (String name : List.of("t0", "t1")) {
                DType dtype = name.equals("t0") ? DType.BF16 : DType.F16;
                byte[] own = written(new NamedTensor.Floats(name, file.stored(name), dtype));
                assertArrayEquals(bytes(file.stored(name)), own, name + " as its own type");
                ByteBuffer f32 = ByteBuffer.wrap(written(new NamedTensor.Floats(name, file.stored(name), DType.F32)))
                        .order(ByteOrder.LITTLE_ENDIAN);
                float[] widened = new float[rows * 7];
                f32.asFloatBuffer().get(widened);
                assertArrayEquals(file.readFloat(name).data().asFloat(), widened, name + " as F32");
            }
        }
    }

    private static byte[] bytes(INDArray stored) {
        ByteBuffer data = stored.data().asNio();
        byte[] out = new byte[(int) (stored.length() * 2)];
        data.get(out);
        return out;
    }

    private static byte[] written(NamedTensor tensor) throws IOException {
        java.io.ByteArrayOutputStream out = new java.io.ByteArrayOutputStream();
        tensor.writeData(out);
        return out.toByteArray();
    }
}
