package org.sparkmoe.io;

import com.sun.jna.Function;
import com.sun.jna.NativeLibrary;
import com.sun.jna.Pointer;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.List;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * The memory-mapped checkpoint bytes one model piece computes with, to let go of when the piece is dropped: the maps
 * stay for the JVM's life (arrays over them hold raw addresses), but {@link #release} tells the kernel this process
 * no longer needs their pages ({@code madvise(MADV_DONTNEED)}). The pages are the file's, shared and clean: they leave
 * this process's resident set (its RSS, which YARN and Kubernetes watch) and stay in the page cache, and a later read
 * through the same addresses faults them in again from the cache or the file — so a release is always safe, even
 * for pages another piece still reads (it only costs that piece the fault). Only whole pages inside a range are
 * released. A no-op off Linux.
 */
public final class MappedPages {
    private static final int MADV_DONTNEED = 4;
    private static final NativeLibrary LIBC = linuxLibc();
    private static final Function MADVISE = LIBC == null ? null : LIBC.getFunction("madvise");
    private static final long PAGE = LIBC == null ? 4096 : LIBC.getFunction("getpagesize").invokeInt(new Object[0]);

    private final List<long[]> ranges = new ArrayList<>();   // {address, bytes}

    /** Records the bytes of {@code array}, an array over a read-only file map (never anonymous memory); returns it. */
    synchronized INDArray add(INDArray array) {
        if (array.length() > 0) {
            long element = array.data().getElementSize();
            ranges.add(new long[] {array.data().address() + array.offset() * element, array.length() * element});
        }
        return array;
    }

    /** Records the bytes of {@code buffer}, a direct buffer over a read-only file map; returns it. */
    synchronized ByteBuffer add(ByteBuffer buffer) {
        if (buffer.isDirect() && buffer.remaining() > 0) {
            ranges.add(new long[] {Pointer.nativeValue(com.sun.jna.Native.getDirectBufferPointer(buffer))
                    + buffer.position(), buffer.remaining()});
        }
        return buffer;
    }

    /** Bytes recorded. */
    public synchronized long bytes() {
        return ranges.stream().mapToLong(r -> r[1]).sum();
    }

    /** Drops the recorded pages from this process's resident set; the recorded ranges stay valid to read. */
    public synchronized void release() {
        if (MADVISE == null) {
            return;
        }
        for (long[] r : ranges) {
            long from = (r[0] + PAGE - 1) / PAGE * PAGE;
            long to = (r[0] + r[1]) / PAGE * PAGE;
            if (to > from) {
                MADVISE.invokeInt(new Object[] {new Pointer(from), to - from, MADV_DONTNEED});
            }
        }
    }

    private static NativeLibrary linuxLibc() {
        return System.getProperty("os.name", "").toLowerCase(java.util.Locale.ROOT).startsWith("linux")
                ? NativeLibrary.getInstance("c") : null;
    }
}
