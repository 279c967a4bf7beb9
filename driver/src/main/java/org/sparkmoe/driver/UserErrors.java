package org.sparkmoe.driver;

import org.sparkmoe.io.CheckpointFormatException;

import java.io.UncheckedIOException;

/**
 * Turns a failure into the one line a user needs. A bad input raised inside a Spark task reaches the driver
 * wrapped in SparkExceptions; the innermost cause is the one that names the culprit.
 */
final class UserErrors {
    private UserErrors() {
    }

    static String message(Throwable e) {
        Throwable cause = rootCause(e);
        String message = cause.getMessage() == null ? cause.getClass().getSimpleName() : cause.getMessage();
        return message.lines().findFirst().orElse(message);
    }

    /** Whether the failure is a bug rather than bad input (then the stack trace is worth printing). */
    static boolean isUnexpected(Throwable e) {
        Throwable cause = rootCause(e);
        return !(cause instanceof IllegalArgumentException || cause instanceof CheckpointFormatException
                || cause instanceof UncheckedIOException || cause instanceof java.io.IOException);
    }

    private static Throwable rootCause(Throwable e) {
        Throwable c = e;
        while (c.getCause() != null && c.getCause() != c) {
            c = c.getCause();
        }
        return c;
    }
}
