package org.sparkmoe.text;

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FSDataInputStream;
import org.apache.hadoop.fs.FileStatus;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;
import org.apache.hadoop.security.AccessControlException;

import java.io.ByteArrayOutputStream;
import java.io.FileNotFoundException;
import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.nio.CharBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CharsetDecoder;
import java.nio.charset.CoderResult;
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

    /**
     * Checks, before any Spark task reads it, that {@code path} is a non-empty, readable regular file of strict
     * UTF-8 text: one streaming pass through a {@link java.nio.charset.CharsetDecoder} over the Hadoop stream,
     * with memory bounded by its buffer (a multi-GB file is never held whole).
     *
     * @throws IllegalArgumentException one line naming the file and what is wrong: not found, a directory, not a
     *     regular file (a FIFO, a device), empty, not readable, UTF-16 (a byte-order mark), binary (a NUL byte,
     *     with its offset) or invalid UTF-8 (with the offset of the first malformed byte)
     * @throws UncheckedIOException for other I/O failures, naming the file
     */
    public static void requireUtf8Text(Path path, Configuration conf) {
        try {
            FileSystem fs = path.getFileSystem(conf);
            FileStatus status = regularFile(fs, path);
            if (status.getLen() == 0) {
                throw new IllegalArgumentException("data file is empty: " + path);
            }
            FSDataInputStream in;
            try {
                in = fs.open(path);
            } catch (AccessControlException | java.nio.file.AccessDeniedException e) {
                throw new IllegalArgumentException("data file is not readable: " + path + " (" + e.getMessage() + ")");
            } catch (FileNotFoundException e) {
                // the local file system says "(Permission denied)" this way
                throw new IllegalArgumentException(e.getMessage() != null && e.getMessage().contains("ermission denied")
                        ? "data file is not readable (permission denied): " + path
                        : "data file not found: " + path);
            }
            try (in) {
                checkUtf8(in, path);
            }
        } catch (IOException e) {
            throw new UncheckedIOException("cannot read data file " + path + ": " + e.getMessage(), e);
        }
    }

    /** The status of {@code path}, which must exist and be a regular file. */
    private static FileStatus regularFile(FileSystem fs, Path path) throws IOException {
        FileStatus status;
        try {
            status = fs.getFileStatus(path);
        } catch (FileNotFoundException e) {
            throw new IllegalArgumentException("data file not found: " + path);
        }
        if (status.isDirectory()) {
            throw new IllegalArgumentException("data file is a directory, expected a text file: " + path);
        }
        // Hadoop's local file system calls a FIFO, a device or a socket a file (of length 0); opening a FIFO
        // would block, so ask the operating system first.
        java.nio.file.Path local = "file".equals(fs.getUri().getScheme())
                ? java.nio.file.Paths.get(fs.makeQualified(path).toUri()) : null;
        if (!status.isFile() || (local != null && !java.nio.file.Files.isRegularFile(local))) {
            throw new IllegalArgumentException("data file is not a regular file (a FIFO, device or socket), "
                    + "expected a text file: " + path);
        }
        return status;
    }

    /** Streams {@code in} through a strict UTF-8 decoder; throws naming the first bad byte's offset. */
    private static void checkUtf8(InputStream in, Path path) throws IOException {
        CharsetDecoder decoder = StandardCharsets.UTF_8.newDecoder()
                .onMalformedInput(CodingErrorAction.REPORT)
                .onUnmappableCharacter(CodingErrorAction.REPORT);
        ByteBuffer bytes = ByteBuffer.allocate(1 << 16);
        CharBuffer chars = CharBuffer.allocate(1 << 16);
        long consumed = 0; // bytes before bytes[0]
        boolean first = true;
        while (true) {
            int n = in.read(bytes.array(), bytes.position(), bytes.remaining());
            if (n > 0) {
                int from = bytes.position();
                bytes.position(from + n);
                if (first && from + n >= 2) {
                    first = false;
                    int b0 = bytes.get(0) & 0xFF;
                    int b1 = bytes.get(1) & 0xFF;
                    if ((b0 == 0xFF && b1 == 0xFE) || (b0 == 0xFE && b1 == 0xFF)) {
                        throw new IllegalArgumentException("data file is UTF-16 (byte-order mark "
                                + String.format("%02X %02X", b0, b1) + "), expected UTF-8: " + path);
                    }
                }
                for (int i = from; i < from + n; i++) {
                    if (bytes.get(i) == 0) {
                        throw new IllegalArgumentException("data file is binary, expected UTF-8 text: " + path
                                + " (a NUL byte at offset " + (consumed + i) + ")");
                    }
                }
            }
            boolean end = n < 0;
            bytes.flip();
            CoderResult result = decoder.decode(bytes, chars, end);
            chars.clear();
            if (result.isError()) {
                throw new IllegalArgumentException("data file is not valid UTF-8: " + path
                        + " (first malformed byte at offset " + (consumed + bytes.position()) + ")");
            }
            consumed += bytes.position();
            bytes.compact();
            if (end) {
                if (bytes.position() > 0) { // an incomplete sequence at the end
                    throw new IllegalArgumentException("data file is not valid UTF-8: " + path
                            + " (first malformed byte at offset " + consumed + ")");
                }
                return;
            }
        }
    }

    /** {@link #readUtf8(Path, Configuration)} for a path string, with a default Configuration. */
    public static String readUtf8(String path) {
        return readUtf8(new Path(path), new Configuration());
    }

    private static byte[] readBytes(Path path, Configuration conf) {
        try {
            FileSystem fs = path.getFileSystem(conf);
            FileStatus status = regularFile(fs, path);
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
