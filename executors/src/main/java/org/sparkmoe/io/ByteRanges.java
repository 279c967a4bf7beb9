package org.sparkmoe.io;

/** Where a local file's bytes may not all be there yet: {@link #fill} makes a range readable before it is read. */
interface ByteRanges {
    /** A file whose bytes are all there. */
    ByteRanges COMPLETE = (from, to) -> {
    };

    /** Makes bytes [from, to) of the file readable. */
    void fill(long from, long to);
}
