package org.sparkmoe.io;

import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Every corrupt file fails at open with one line naming the file, the culprit and the numbers. */
class SafeTensorsCorruptionTest {

    @TempDir
    Path tmp;

    private static final String TWO_F32 = "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";

    private String openFails(Path file) {
        CheckpointFormatException e = assertThrows(CheckpointFormatException.class, () -> SafeTensorsFile.open(file));
        String message = e.getMessage();
        assertTrue(message.contains(file.getFileName().toString()), message);
        assertTrue(!message.contains("\n"), message);
        return message;
    }

    private static void assertContains(String message, String... parts) {
        for (String part : parts) {
            assertTrue(message.contains(part), "expected '" + part + "' in: " + message);
        }
    }

    @Test
    void truncatedFile() throws IOException {
        Path file = Files.write(tmp.resolve("short.safetensors"), new byte[] {1, 2, 3});
        assertContains(openFails(file), "file is 3 bytes", "at least 8");
    }

    @Test
    void headerLengthPastEndOfFile() throws IOException {
        byte[] header = TWO_F32.getBytes(StandardCharsets.UTF_8);
        Path file = RawSafeTensors.write(tmp.resolve("past.safetensors"), header.length + 100, header, new byte[8]);
        assertContains(openFails(file), "header length " + (header.length + 100), "past the end of the file");
    }

    @Test
    void headerLengthOverTheCap() throws IOException {
        Path file = RawSafeTensors.write(tmp.resolve("cap.safetensors"), 200L << 20, new byte[16], new byte[0]);
        assertContains(openFails(file), "header length " + (200L << 20), "cap of " + (100L << 20));
    }

    @Test
    void headerLengthWithTheTopBitSet() throws IOException {
        Path file = RawSafeTensors.write(tmp.resolve("huge.safetensors"), -1L, new byte[16], new byte[0]);
        assertContains(openFails(file), "header length 18446744073709551615", "cap");
    }

    @Test
    void malformedJson() throws IOException {
        Path file = RawSafeTensors.write(tmp.resolve("json.safetensors"), "{\"w\":{\"dtype\":", new byte[8]);
        assertContains(openFails(file), "header is not valid JSON");
    }

    @Test
    void headerThatIsNotAnObject() throws IOException {
        Path file = RawSafeTensors.write(tmp.resolve("array.safetensors"), "[1, 2]", new byte[0]);
        assertContains(openFails(file), "must be a JSON object", "ARRAY");
    }

    @Test
    void duplicateTensorNames() throws IOException {
        Path file = RawSafeTensors.write(tmp.resolve("dup.safetensors"),
                "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                        + "\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", new byte[8]);
        assertContains(openFails(file), "not valid JSON", "Duplicate field 'w'");
    }

    @Test
    void offsetsPastEndOfData() throws IOException {
        Path file = RawSafeTensors.write(tmp.resolve("end.safetensors"), TWO_F32, new byte[4]);
        assertContains(openFails(file), "tensor 'w'", "end 8", "data section of 4 bytes");
    }

    @Test
    void beginAfterEnd() throws IOException {
        Path file = RawSafeTensors.write(tmp.resolve("order.safetensors"),
                "{\"w\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,4]}}", new byte[8]);
        assertContains(openFails(file), "tensor 'w'", "begin 8 > end 4");
    }

    @Test
    void overlappingRanges() throws IOException {
        Path file = RawSafeTensors.write(tmp.resolve("overlap.safetensors"),
                "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                        + "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", new byte[12]);
        assertContains(openFails(file), "'a' bytes [0, 8)", "'b' bytes [4, 12)", "overlap");
    }

    @Test
    void byteLengthNotDtypeTimesShape() throws IOException {
        Path file = RawSafeTensors.write(tmp.resolve("len.safetensors"),
                "{\"w\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", new byte[8]);
        assertContains(openFails(file), "tensor 'w'", "F32 [3] needs 12 bytes", "hold 8");
    }

    @Test
    void unknownDtype() throws IOException {
        Path file = RawSafeTensors.write(tmp.resolve("dtype.safetensors"),
                "{\"w\":{\"dtype\":\"F8_E5M2\",\"shape\":[8],\"data_offsets\":[0,8]}}", new byte[8]);
        assertContains(openFails(file), "tensor 'w'", "unknown dtype 'F8_E5M2'", "BF16");
    }

    @Test
    void negativeShape() throws IOException {
        Path file = RawSafeTensors.write(tmp.resolve("neg.safetensors"),
                "{\"w\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", new byte[8]);
        assertContains(openFails(file), "tensor 'w'", "shape must be an array of non-negative integers", "[-2]");
    }

    @Test
    void missingOffsets() throws IOException {
        Path file = RawSafeTensors.write(tmp.resolve("nooff.safetensors"),
                "{\"w\":{\"dtype\":\"F32\",\"shape\":[2]}}", new byte[8]);
        assertContains(openFails(file), "tensor 'w'", "data_offsets must be an array of 2", "found nothing");
    }

    @Test
    void metadataThatIsNotStrings() throws IOException {
        Path file = RawSafeTensors.write(tmp.resolve("meta.safetensors"),
                "{\"__metadata__\":{\"format\":1}}", new byte[0]);
        assertContains(openFails(file), "__metadata__ entry 'format'", "must be a string", "NUMBER");
    }

    @Test
    void missingFile() {
        assertContains(openFails(tmp.resolve("absent.safetensors")), "not found");
    }

    @Test
    void missingTensor() throws IOException {
        Path file = RawSafeTensors.write(tmp.resolve("ok.safetensors"), TWO_F32, new byte[8]);
        try (SafeTensorsFile f = SafeTensorsFile.open(file)) {
            CheckpointFormatException e = assertThrows(CheckpointFormatException.class, () -> f.readFloat("v"));
            assertContains(e.getMessage(), "ok.safetensors", "tensor 'v' is missing");
        }
    }

    @Test
    void readingAnUnsupportedDtypeAsFloat() throws IOException {
        Path file = RawSafeTensors.write(tmp.resolve("u8.safetensors"),
                "{\"mask\":{\"dtype\":\"BOOL\",\"shape\":[4],\"data_offsets\":[0,4]}}", new byte[4]);
        try (SafeTensorsFile f = SafeTensorsFile.open(file)) {
            CheckpointFormatException e = assertThrows(CheckpointFormatException.class, () -> f.readFloat("mask"));
            assertContains(e.getMessage(), "u8.safetensors", "'mask' has dtype BOOL", "readFloat reads");
            CheckpointFormatException l = assertThrows(CheckpointFormatException.class, () -> f.readLongs("mask"));
            assertContains(l.getMessage(), "'mask' has dtype BOOL", "readLongs reads");
        }
    }
}
