package org.sparkmoe.io;

import org.junit.jupiter.api.Test;

import java.io.ByteArrayOutputStream;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

/** The GGUF v3 byte layout, field by field, against bytes built here from the format's description. */
class GgufWriterTest {

    @Test
    void bytesAreTheGgufV3LayoutWithAlignedTensorData() throws Exception {
        ByteArrayOutputStream written = new ByteArrayOutputStream();
        new GgufWriter()
                .putString("general.type", "imatrix")
                .putStringArray("imatrix.datasets", List.of("a.txt", "b"))
                .putUint32("imatrix.chunk_count", 7)
                .add(new GgufWriter.F32Tensor("x.in_sum2", new long[] {3, 2}, () -> new float[] {1, 2, 3, 4, 5, 6}))
                .add(new GgufWriter.F32Tensor("x.counts", new long[] {1, 2}, () -> new float[] {10, 0.5f}))
                .writeTo(written);

        ByteBuffer e = ByteBuffer.allocate(1024).order(ByteOrder.LITTLE_ENDIAN);
        e.put("GGUF".getBytes(StandardCharsets.US_ASCII)).putInt(3).putLong(2).putLong(3);
        string(e, "general.type");
        e.putInt(8);
        string(e, "imatrix");
        string(e, "imatrix.datasets");
        e.putInt(9).putInt(8).putLong(2);
        string(e, "a.txt");
        string(e, "b");
        string(e, "imatrix.chunk_count");
        e.putInt(4).putInt(7);
        string(e, "x.in_sum2");
        e.putInt(2).putLong(3).putLong(2).putInt(0).putLong(0);
        string(e, "x.counts");
        e.putInt(2).putLong(1).putLong(2).putInt(0).putLong(32);   // 6 floats = 24 bytes, padded to 32
        while (e.position() % 32 != 0) {
            e.put((byte) 0);
        }
        int dataStart = e.position();
        for (float v : new float[] {1, 2, 3, 4, 5, 6}) {
            e.putFloat(v);
        }
        e.putLong(0);                                             // padding to 32
        e.putFloat(10).putFloat(0.5f);
        e.put(new byte[24]);                                      // padding to 32
        byte[] expected = new byte[e.position()];
        e.flip().get(expected);

        assertEquals(0, dataStart % 32);
        assertArrayEquals(expected, written.toByteArray());
    }

    @Test
    void refusesATensorWhoseValuesDoNotFillItsDimsAndATwiceUsedName() {
        GgufWriter w = new GgufWriter().add(new GgufWriter.F32Tensor("t", new long[] {2, 2}, () -> new float[3]));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> w.writeTo(new ByteArrayOutputStream()));
        assertEquals("t: dims [2, 2] hold 4 values, got 3", e.getMessage());
        assertThrows(IllegalArgumentException.class,
                () -> w.add(new GgufWriter.F32Tensor("t", new long[] {1}, () -> new float[1])));
    }

    private static void string(ByteBuffer b, String s) {
        byte[] utf8 = s.getBytes(StandardCharsets.UTF_8);
        b.putLong(utf8.length).put(utf8);
    }
}
