package org.sparkmoe.io;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.FloatBuffer;
import java.nio.MappedByteBuffer;
import java.nio.channels.ClosedChannelException;
import java.nio.channels.FileChannel;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.Map;
import java.util.Set;
import java.util.function.Supplier;
import org.bytedeco.javacpp.BytePointer;
import org.bytedeco.javacpp.DoublePointer;
import org.bytedeco.javacpp.FloatPointer;
import org.bytedeco.javacpp.ShortPointer;
import org.bytedeco.javacpp.indexer.Bfloat16Indexer;
import org.bytedeco.javacpp.indexer.DoubleIndexer;
import org.bytedeco.javacpp.indexer.FloatIndexer;
import org.bytedeco.javacpp.indexer.HalfIndexer;
import org.bytedeco.javacpp.indexer.UByteIndexer;
import org.nd4j.linalg.api.buffer.DataBuffer;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/**
 * A local .safetensors file, checked completely at open and read through memory maps: copied out (widened to
 * float32) by {@link #readFloat}, or used where it lies by {@link #stored}.
 *
 * <p>Layout: 8 bytes little-endian header length N, N bytes of JSON header, then the data section;
 * tensor offsets count from the start of the data section. Each read maps the tensor's own byte
 * range (in pieces of at most 1 GiB, so files and tensors may exceed 2 GiB) and keeps no position
 * state, so several threads may read one instance at once.
 */
public final class SafeTensorsFile implements AutoCloseable {

    /** Largest header accepted; the reference implementation uses the same cap. */
    static final long MAX_HEADER_BYTES = 100L << 20;
    /** Bytes mapped at once: 1 GiB, a whole number of elements of every dtype. */
    static final long PIECE_BYTES = 1L << 30;
    /** Largest Java array the JVM reliably allocates. */
    private static final long MAX_ELEMENTS = Integer.MAX_VALUE - 8;

    private final Path file;
    private final FileChannel channel;
    private final long dataStart;
    private final SafeTensorsHeader header;
    private final long pieceBytes;
    private final ByteRanges ranges;
    private volatile FileMappings mappings;  // this file's JVM-wide maps, looked up on the first stored()

    private SafeTensorsFile(Path file, FileChannel channel, long dataStart, SafeTensorsHeader header,
            long pieceBytes, ByteRanges ranges) {
        this.file = file;
        this.channel = channel;
        this.dataStart = dataStart;
        this.header = header;
        this.pieceBytes = pieceBytes;
        this.ranges = ranges;
    }

    /** Opens and validates {@code file}; throws CheckpointFormatException naming what is wrong. */
    public static SafeTensorsFile open(Path file) {
        return open(file, PIECE_BYTES, ByteRanges.COMPLETE);
    }

    /** As {@link #open(Path)} for a file whose ranges are filled by {@code ranges} before they are read. */
    static SafeTensorsFile open(Path file, ByteRanges ranges) {
        return open(file, PIECE_BYTES, ranges);
    }

    /** As {@link #open(Path)}, mapping at most {@code pieceBytes} (a positive multiple of 8) at once. */
    static SafeTensorsFile open(Path file, long pieceBytes) {
        return open(file, pieceBytes, ByteRanges.COMPLETE);
    }

    private static SafeTensorsFile open(Path file, long pieceBytes, ByteRanges ranges) {
        if (pieceBytes <= 0 || pieceBytes % Long.BYTES != 0) {
            throw new IllegalArgumentException("pieceBytes must be a positive multiple of 8, found " + pieceBytes);
        }
        FileChannel channel;
        try {
            channel = FileChannel.open(file, StandardOpenOption.READ);
        } catch (NoSuchFileException e) {
            throw new CheckpointFormatException(file + ": safetensors file not found", e);
        } catch (IOException e) {
            throw new UncheckedIOException("opening " + file, e);
        }
        try {
            return open(file, channel, pieceBytes, ranges);
        } catch (RuntimeException e) {
            try {
                channel.close();
            } catch (IOException closing) {
                e.addSuppressed(closing);
            }
            throw e;
        }
    }

    private static SafeTensorsFile open(Path file, FileChannel channel, long pieceBytes, ByteRanges ranges) {
        try {
            long fileLength = channel.size();
            if (fileLength < Long.BYTES) {
                throw new CheckpointFormatException(file + ": file is " + fileLength
                        + " bytes, expected at least 8 for the header length");
            }
            ranges.fill(0, Long.BYTES);
            long headerLength = readFully(channel, 0, Long.BYTES).getLong(0);
            if (headerLength < 0 || headerLength > MAX_HEADER_BYTES) {
                throw new CheckpointFormatException(file + ": header length " + Long.toUnsignedString(headerLength)
                        + " exceeds the cap of " + MAX_HEADER_BYTES + " bytes");
            }
            if (headerLength > fileLength - Long.BYTES) {
                throw new CheckpointFormatException(file + ": header length " + headerLength
                        + " is past the end of the file, which has " + (fileLength - Long.BYTES)
                        + " bytes after the length field");
            }
            ranges.fill(Long.BYTES, Long.BYTES + headerLength);
            ByteBuffer json = readFully(channel, Long.BYTES, (int) headerLength);
            long dataStart = Long.BYTES + headerLength;
            SafeTensorsHeader header = SafeTensorsHeader.parse(file.toString(), json.array(), fileLength - dataStart);
            return new SafeTensorsFile(file, channel, dataStart, header, pieceBytes, ranges);
        } catch (IOException e) {
            throw new UncheckedIOException("reading the header of " + file, e);
        }
    }

    /** {@code length} bytes at absolute {@code position}, in a little-endian heap buffer. */
    private static ByteBuffer readFully(FileChannel channel, long position, int length) throws IOException {
        ByteBuffer buffer = ByteBuffer.allocate(length).order(ByteOrder.LITTLE_ENDIAN);
        while (buffer.hasRemaining()) {
            int n = channel.read(buffer, position + buffer.position());
            if (n < 0) {
                throw new IOException("file ended while reading " + length + " bytes at " + position);
            }
        }
        return buffer;
    }

    public Path path() {
        return file;
    }

    /** Tensor names in header order. */
    public Set<String> names() {
        return header.tensors().keySet();
    }

    public boolean has(String name) {
        return header.tensors().containsKey(name);
    }

    public TensorInfo info(String name) {
        TensorInfo info = header.tensors().get(name);
        if (info == null) {
            throw new CheckpointFormatException(file + ": tensor '" + name + "' is missing ("
                    + header.tensors().size() + " tensors in the file)");
        }
        return info;
    }

    /** The tensor's place, its bytes made readable first (a node-cache copy fills them on demand). */
    private TensorInfo readable(String name) {
        TensorInfo info = info(name);
        ranges.fill(dataStart + info.begin(), dataStart + info.end());
        return info;
    }

    /** The {@code __metadata__} entries; empty when the header has none. */
    public Map<String, String> metadata() {
        return header.metadata();
    }

    /**
     * A new float32 'c'-order array of the tensor's shape; F16, BF16 and F64 are converted. Decoded straight into the
     * array's off-heap buffer (no heap copy of the tensor).
     */
    public INDArray readFloat(String name) {
        TensorInfo info = readable(name);
        requireDType(info, ElementDecoder.FLOAT_TYPES, "readFloat");
        long[] shape = info.shape();
        int n = elementCount(info);
        INDArray out = Nd4j.createUninitialized(DataType.FLOAT, shape, 'c');
        if (n > 0) {
            FloatBuffer values = out.data().asNio().order(ByteOrder.nativeOrder()).asFloatBuffer();
            forEachPiece(info, (piece, first) -> ElementDecoder.toFloats(info.dtype(), piece, values, first));
        }
        return out;
    }

    /**
     * The tensor in its stored type (F32 → FLOAT, BF16 → BFLOAT16, F16 → HALF, F64 → DOUBLE, and F8_E4M3 → UINT8:
     * the FP8 codes, meaningful only with their block scales, see {@link Fp8BlockMatrix}) over a read-only map of
     * the file, shared by the whole JVM ({@link FileMappings}): no copy, and the pages stay file-backed. The array must
     * never be written. Valid for the JVM's life, even after this file is closed.
     */
    public INDArray stored(String name) {
        TensorInfo info = readable(name);
        requireDType(info, ElementDecoder.STORED_TYPES, "stored");
        if (info.elementCount() == 0) {
            return readFloat(name);
        }
        ByteBuffer bytes = mappings().bytes(file, channel, info, dataStart);
        long n = info.elementCount();
        DataBuffer buffer = switch (info.dtype()) {
            case F32 -> {
                FloatPointer p = new FloatPointer(bytes.asFloatBuffer());
                yield Nd4j.createBuffer(p, DataType.FLOAT, n, FloatIndexer.create(p));
            }
            case BF16 -> {
                ShortPointer p = new ShortPointer(bytes.asShortBuffer());
                yield Nd4j.createBuffer(p, DataType.BFLOAT16, n, Bfloat16Indexer.create(p));
            }
            case F16 -> {
                ShortPointer p = new ShortPointer(bytes.asShortBuffer());
                yield Nd4j.createBuffer(p, DataType.HALF, n, HalfIndexer.create(p));
            }
            case F64 -> {
                DoublePointer p = new DoublePointer(bytes.asDoubleBuffer());
                yield Nd4j.createBuffer(p, DataType.DOUBLE, n, DoubleIndexer.create(p));
            }
            case F8_E4M3 -> {
                BytePointer p = new BytePointer(bytes);
                yield Nd4j.createBuffer(p, DataType.UINT8, n, UByteIndexer.create(p));
            }
            default -> throw new IllegalStateException("unreachable: " + info.dtype());
        };
        long[] shape = info.shape();
        return Nd4j.create(buffer, shape, Nd4j.getStrides(shape, 'c'), 0, 'c', buffer.dataType());
    }

    /** A U8 tensor's bytes (MXFP4 blocks, scales) over the JVM-wide read-only map: no copy; never to be written. */
    public ByteBuffer bytes(String name) {
        TensorInfo info = readable(name);
        requireDType(info, java.util.EnumSet.of(DType.U8), "bytes");
        return info.byteLength() == 0 ? ByteBuffer.allocate(0) : mappings().bytes(file, channel, info, dataStart);
    }

    /** The JVM-wide maps of this file, looked up (path, length, mtime) once per open file, not once per tensor. */
    private FileMappings mappings() {
        FileMappings m = mappings;
        if (m == null) {
            m = FileMappings.of(file, header, dataStart, pieceBytes);
            mappings = m;
        }
        return m;
    }

    /** The tensor's elements in row-major order; I32 is widened. */
    public long[] readLongs(String name) {
        TensorInfo info = readable(name);
        requireDType(info, ElementDecoder.INTEGER_TYPES, "readLongs");
        long[] values = new long[elementCount(info)];
        forEachPiece(info, (piece, first) -> ElementDecoder.toLongs(info.dtype(), piece, values, first));
        return values;
    }

    private void requireDType(TensorInfo info, Set<DType> accepted, String method) {
        if (!accepted.contains(info.dtype())) {
            throw new CheckpointFormatException(file + ": tensor '" + info.name() + "' has dtype " + info.dtype()
                    + ", " + method + " reads " + accepted);
        }
    }

    private int elementCount(TensorInfo info) {
        long n = info.elementCount();
        if (n > MAX_ELEMENTS) {
            throw new CheckpointFormatException(file + ": tensor '" + info.name() + "' has " + n
                    + " elements, more than one Java array holds (" + MAX_ELEMENTS + ")");
        }
        return (int) n;
    }

    private interface PieceReader {
        /** {@code piece}: little-endian bytes of elements first, first+1, ... */
        void read(ByteBuffer piece, int first);
    }

    private void forEachPiece(TensorInfo info, PieceReader reader) {
        int elementBytes = info.dtype().byteSize();
        for (long offset = 0; offset < info.byteLength(); offset += pieceBytes) {
            long length = Math.min(pieceBytes, info.byteLength() - offset);
            long position = dataStart + info.begin() + offset;
            MappedByteBuffer piece = map(position, length, () -> "tensor '" + info.name() + "'");
            reader.read(piece.order(ByteOrder.LITTLE_ENDIAN), (int) (offset / elementBytes));
        }
    }

    private MappedByteBuffer map(long position, long length, Supplier<String> what) {
        try {
            return channel.map(FileChannel.MapMode.READ_ONLY, position, length);
        } catch (ClosedChannelException e) {
            throw new IllegalStateException(file + " is closed; cannot read " + what.get(), e);
        } catch (IOException e) {
            throw new UncheckedIOException("mapping " + what.get() + " of " + file, e);
        }
    }

    @Override
    public void close() {
        try {
            channel.close();
        } catch (IOException e) {
            throw new UncheckedIOException("closing " + file, e);
        }
    }

    @Override
    public String toString() {
        return "SafeTensorsFile(" + file + ", " + header.tensors().size() + " tensors)";
    }
}
