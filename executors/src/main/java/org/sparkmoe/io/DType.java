package org.sparkmoe.io;

import java.util.Optional;

/** Element types of the safetensors format, spelled as in the file header. */
public enum DType {
    F64(8), F32(4), F16(2), BF16(2), F8_E4M3(1), I64(8), I32(4), I16(2), I8(1), U8(1), BOOL(1);

    private final int byteSize;

    DType(int byteSize) {
        this.byteSize = byteSize;
    }

    /** Bytes per element. */
    public int byteSize() {
        return byteSize;
    }

    /** Whether {@code readFloat} can widen it: the floating-point types (weights must be one of these). */
    public boolean isFloat() {
        return this == F32 || this == F16 || this == BF16 || this == F64;
    }

    /**
     * FP8 e4m3 (DeepSeek-V3's weights): read only as the codes of a block-scaled matrix ({@link Fp8BlockMatrix}),
     * never widened alone.
     */
    public boolean isFp8() {
        return this == F8_E4M3;
    }

    /** The dtype spelled {@code text} in a header ("F32", "BF16", ...), if there is one. */
    static Optional<DType> parse(String text) {
        for (DType d : values()) {
            if (d.name().equals(text)) {
                return Optional.of(d);
            }
        }
        return Optional.empty();
    }
}
