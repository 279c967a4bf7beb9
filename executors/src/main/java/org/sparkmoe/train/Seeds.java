package org.sparkmoe.train;

import java.nio.charset.StandardCharsets;
import java.util.SplittableRandom;

/**
 * Every seed of a training run derived from one root seed and a name (a tensor key, "jitter/step/12"): a 64-bit
 * FNV-1a hash of the name's UTF-8 bytes mixed with the root through {@link SplittableRandom}. Independent of the
 * order in which seeds are asked for, so adding a target does not change the others' streams.
 */
public final class Seeds {
    private static final long FNV_OFFSET = 0xcbf29ce484222325L;
    private static final long FNV_PRIME = 0x100000001b3L;

    private Seeds() {
    }

    public static long derive(long root, String name) {
        long h = FNV_OFFSET;
        for (byte b : name.getBytes(StandardCharsets.UTF_8)) {
            h = (h ^ (b & 0xff)) * FNV_PRIME;
        }
        return new SplittableRandom(root ^ h).nextLong();
    }
}
