package org.sparkmoe.driver;

import org.sparkmoe.io.CheckpointFormatException;

import java.io.IOException;
import java.io.ObjectStreamException;
import java.io.UncheckedIOException;
import java.net.ConnectException;
import java.net.UnknownHostException;

/**
 * Turns a failure into the one line a user needs. Bad input raised inside a Spark task reaches the driver
 * wrapped in SparkExceptions; the outermost bad-input exception in the cause chain is the one that names
 * the culprit (its own causes, such as a CharacterCodingException, say less).
 */
final class UserErrors {
    private UserErrors() {
    }

    static String message(Throwable e) {
        Throwable shown = badInput(e);
        if (shown == null) {
            shown = rootCause(e);
        }
        String message = shown.getMessage() == null ? shown.getClass().getSimpleName() : shown.getMessage();
        return message.lines().findFirst().orElse(message);
    }

    /**
     * Why an I/O failure happened, in one short phrase: "unknown host NAME", "connection refused (nothing listening
     * at ...)" for the network failures Hadoop wraps several times, else the first line of the message.
     */
    static String reason(Throwable e) {
        for (Throwable c = e; c != null; c = c.getCause() == c ? null : c.getCause()) {
            String m = c.getMessage() == null ? "" : c.getMessage();
            if (c instanceof UnknownHostException || m.startsWith("java.net.UnknownHostException")) {
                return "unknown host " + m.replaceFirst("^java\\.net\\.UnknownHostException: ", "");
            }
            if (c instanceof ConnectException) {
                return "connection refused" + (e.getMessage() != null && e.getMessage().contains(" to ")
                        ? " (" + e.getMessage().replaceFirst("^.* to ([^ ]+) failed.*$", "nothing listening at $1")
                                .lines().findFirst().orElse("") + ")" : "");
            }
        }
        String m = e.getMessage() == null ? e.getClass().getSimpleName() : e.getMessage();
        return m.lines().findFirst().orElse(m);
    }

    /** Whether the failure is a bug rather than bad input (then the stack trace is worth printing). */
    static boolean isUnexpected(Throwable e) {
        return badInput(e) == null;
    }

    private static Throwable badInput(Throwable e) {
        for (Throwable c = e; c != null; c = c.getCause() == c ? null : c.getCause()) {
            if (c instanceof ObjectStreamException) {
                return null; // a class that cannot be serialized ("Task not serializable") is a bug, not input
            }
            if (c instanceof IllegalArgumentException || c instanceof CheckpointFormatException
                    || c instanceof UncheckedIOException || c instanceof IOException) {
                return c;
            }
        }
        return null;
    }

    private static Throwable rootCause(Throwable e) {
        Throwable c = e;
        while (c.getCause() != null && c.getCause() != c) {
            c = c.getCause();
        }
        return c;
    }
}
