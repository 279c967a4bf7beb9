package org.sparkmoe.surgery;

import com.fasterxml.jackson.databind.JsonNode;

/** The number arrays of the statistics files surgery reads (router-stats.json, expert-scores.json), checked. */
final class JsonArrays {
    private JsonArrays() {
    }

    /** Field {@code name} of {@code n}: {@code length} non-negative integers, else one line naming {@code where}. */
    static long[] longs(JsonNode n, String name, int length, String where) {
        JsonNode v = n.get(name);
        if (v == null || !v.isArray() || v.size() != length) {
            throw new IllegalArgumentException(where + ": field " + name + " must be an array of " + length + " integers");
        }
        long[] out = new long[length];
        for (int i = 0; i < length; i++) {
            if (!v.get(i).isIntegralNumber() || v.get(i).asLong() < 0) {
                throw new IllegalArgumentException(where + ": " + name + "[" + i + "] is not a count: " + v.get(i));
            }
            out[i] = v.get(i).asLong();
        }
        return out;
    }

    /** Field {@code name} of {@code n}: {@code length} finite numbers, else one line naming {@code where}. */
    static double[] doubles(JsonNode n, String name, int length, String where) {
        JsonNode v = n.get(name);
        if (v == null || !v.isArray() || v.size() != length) {
            throw new IllegalArgumentException(where + ": field " + name + " must be an array of " + length + " numbers");
        }
        double[] out = new double[length];
        for (int i = 0; i < length; i++) {
            if (!v.get(i).isNumber() || !Double.isFinite(v.get(i).asDouble())) {
                throw new IllegalArgumentException(where + ": " + name + "[" + i + "] is not a finite number: "
                        + v.get(i));
            }
            out[i] = v.get(i).asDouble();
        }
        return out;
    }
}
