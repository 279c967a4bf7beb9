package org.sparkmoe.text;

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FSDataInputStream;
import org.apache.hadoop.fs.FileStatus;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;

import java.io.ByteArrayOutputStream;
import java.io.FileNotFoundException;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.nio.CharBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;

/** Whole-file UTF-8 text through the Hadoop FileSystem API (local, HDFS, S3A, ...). */
public final class TextFiles {

    private TextFiles() {
    }

    /**
     * Reads all of {@code path} as strict UTF-8.
     *
     * @throws IllegalArgumentException "data file not found: PATH", "data file is empty: PATH",
     *     or naming the file and the byte offset where the UTF-8 is invalid (no silent U+FFFD)
     * @throws UncheckedIOException for other I/O failures, naming the file
     */
    public static String readUtf8(Path path, Configuration conf) {
        byte[] bytes = readBytes(path, conf);
        if (bytes.length == 0) {
            throw new IllegalArgumentException("data file is empty: " + path);
        }
        try {
            return StandardCharsets.UTF_8.newDecoder()
                    .onMalformedInput(CodingErrorAction.REPORT)
                    .onUnmappableCharacter(CodingErrorAction.REPORT)
                    .decode(ByteBuffer.wrap(bytes))
                    .toString();
        } catch (CharacterCodingException e) {
            throw new IllegalArgumentException("data file is not valid UTF-8: " + path
                    + " (first malformed byte at offset " + firstInvalidByte(bytes) + ")", e);
        }
    }

    /** {@link #readUtf8(Path, Configuration)} for a path string, with a default Configuration. */
    public static String readUtf8(String path) {
        return readUtf8(new Path(path), new Configuration());
    }

    private static byte[] readBytes(Path path, Configuration conf) {
        try {
            FileSystem fs = path.getFileSystem(conf);
            FileStatus status;
            try {
                status = fs.getFileStatus(path);
            } catch (FileNotFoundException e) {
                throw new IllegalArgumentException("data file not found: " + path);
            }
            if (status.isDirectory()) {
                throw new IllegalArgumentException("data file is a directory, expected a text file: "
                        + path);
            }
            if (status.getLen() > Integer.MAX_VALUE - 8) {
                throw new IllegalArgumentException("data file is too large to read whole ("
                        + status.getLen() + " bytes, at most " + (Integer.MAX_VALUE - 8) + "): "
                        + path);
            }
            ByteArrayOutputStream out = new ByteArrayOutputStream((int) status.getLen());
            try (FSDataInputStream in = fs.open(path)) {
                in.transferTo(out);
            }
            return out.toByteArray();
        } catch (FileNotFoundException e) {
            throw new IllegalArgumentException("data file not found: " + path);
        } catch (IOException e) {
            throw new UncheckedIOException("cannot read data file " + path + ": " + e.getMessage(), e);
        }
    }

    /** Offset of the first byte that does not start a well-formed UTF-8 sequence, or -1. */
    private static long firstInvalidByte(byte[] bytes) {
        var decoder = StandardCharsets.UTF_8.newDecoder()
                .onMalformedInput(CodingErrorAction.REPORT)
                .onUnmappableCharacter(CodingErrorAction.REPORT);
        ByteBuffer in = ByteBuffer.wrap(bytes);
        CharBuffer out = CharBuffer.allocate(8192);
        while (true) {
            var result = decoder.decode(in, out, true);
            if (result.isError()) {
                return in.position();
            }
            if (result.isUnderflow()) {
                return -1;
            }
            out.clear();
        }
    }
}
