package org.sparkmoe.driver;

import java.util.List;

/**
 * The checks every job plan makes in its constructor. Each throws IllegalArgumentException with one line naming the
 * flag, what was expected and what was found; only the command line turns it into an exit code.
 */
public final class PlanChecks {
    private PlanChecks() {
    }

    public static void requireAtLeast(String flag, long value, long min) {
        if (value < min) {
            throw new IllegalArgumentException(flag + " must be ≥ " + min + ", got " + value);
        }
    }

    public static void requireNonNull(String flag, Object value) {
        if (value == null) {
            throw new IllegalArgumentException(flag + " must be given, got none");
        }
    }

    public static void requireModel(String model) {
        if (model == null || model.isBlank()) {
            throw new IllegalArgumentException("--model must name a model folder, got "
                    + (model == null ? "none" : "'" + model + "'"));
        }
    }

    /** The --data files, copied; at least one, none blank. */
    public static List<String> requireData(List<String> data) {
        if (data == null || data.isEmpty()) {
            throw new IllegalArgumentException("--data must name at least one text file, got none");
        }
        for (int i = 0; i < data.size(); i++) {
            if (data.get(i) == null || data.get(i).isBlank()) {
                throw new IllegalArgumentException("--data must name text files, got an empty name (entry " + (i + 1)
                        + " of " + data.size() + " in '" + String.join(",", data) + "')");
            }
        }
        return List.copyOf(data);
    }
}
