package org.sparkmoe.text;

import java.util.Arrays;
import java.util.Locale;
import java.util.stream.Collectors;

/**
 * The corpus split rule (docs/data.md): per file, counted in Unicode code points, the first 90% is
 * {@code train}, the next 5% {@code valid} (calibration), the last 5% {@code test}.
 *
 * <p>Exact boundaries, for a text of {@code n} code points:
 * <pre>
 *   trainEnd = floor(0.90 * n)      validEnd = floor(0.95 * n)
 *   TRAIN = [0, trainEnd)   VALID = [trainEnd, validEnd)   TEST = [validEnd, n)   ALL = [0, n)
 * </pre>
 * computed in integer arithmetic as {@code n * 90 / 100} and {@code n * 95 / 100} (long, so
 * there is no float rounding and no overflow). Indices count code points, not Java chars: a
 * supplementary character (emoji, rare CJK) is one code point and is never cut in half. The three
 * parts concatenate back to the whole text.
 */
public enum TextSplit {
    TRAIN, VALID, TEST, ALL;

    /** Parses a split name, case-insensitively ("train", "valid", "test", "all"). */
    public static TextSplit parse(String name) {
        if (name != null) {
            for (TextSplit s : values()) {
                if (s.name().equalsIgnoreCase(name.trim())) {
                    return s;
                }
            }
        }
        throw new IllegalArgumentException("unknown split '" + name + "'; expected one of "
                + Arrays.stream(values()).map(TextSplit::toString)
                        .collect(Collectors.joining(", ")));
    }

    /** This split of {@code text} (see the class comment for the exact boundaries). */
    public String apply(String text) {
        int n = text.codePointCount(0, text.length());
        int from = startCodePoint(n);
        int to = endCodePoint(n);
        int fromChar = text.offsetByCodePoints(0, from);
        int toChar = text.offsetByCodePoints(fromChar, to - from);
        return text.substring(fromChar, toChar);
    }

    /** First code point index (inclusive) of this split in a text of {@code n} code points. */
    public int startCodePoint(int n) {
        switch (this) {
            case TRAIN: case ALL: return 0;
            case VALID: return trainEnd(n);
            case TEST: return validEnd(n);
            default: throw new AssertionError(this);
        }
    }

    /** Last code point index (exclusive) of this split in a text of {@code n} code points. */
    public int endCodePoint(int n) {
        switch (this) {
            case TRAIN: return trainEnd(n);
            case VALID: return validEnd(n);
            case TEST: case ALL: return n;
            default: throw new AssertionError(this);
        }
    }

    /** {@code floor(0.90 * n)}. */
    static int trainEnd(int n) {
        return (int) ((long) n * 90 / 100);
    }

    /** {@code floor(0.95 * n)}. */
    static int validEnd(int n) {
        return (int) ((long) n * 95 / 100);
    }

    /** The lower-case name used on command lines and in reports. */
    @Override
    public String toString() {
        return name().toLowerCase(Locale.ROOT);
    }
}
