package org.sparkmoe.driver;

import org.apache.hadoop.fs.FSError;
import org.apache.spark.SparkException;
import org.sparkmoe.io.CheckpointFormatException;

import java.io.IOException;
import java.io.ObjectStreamException;
import java.io.UncheckedIOException;
import java.net.ConnectException;
import java.net.UnknownHostException;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * Turns a failure into the one line a user needs. Bad input raised inside a Spark task reaches the driver
 * wrapped in SparkExceptions; the outermost bad-input exception in the cause chain is the one that names
 * the culprit (its own causes, such as a CharacterCodingException, say less).
 */
final class UserErrors {
    private UserErrors() {
    }

    static String message(Throwable e) {
        OutOfMemoryError oom = find(e, OutOfMemoryError.class);
        if (oom != null || mentions(e, "java.lang.OutOfMemoryError")) {
            return outOfMemory(e);
        }
        String scheme = missingFileSystem(e);
        if (scheme != null) {
            return "no Hadoop filesystem for scheme " + scheme + "; add " + FILESYSTEM_JARS.getOrDefault(scheme,
                    "the jar that implements it") + " to the classpath";
        }
        FSError fsError = find(e, FSError.class);
        if (fsError != null && (badInput(e) == null || badInput(e) == fsError.getCause())) {
            return "the local file system failed: " + reason(fsError.getCause() == null ? fsError : fsError.getCause());
        }
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
        return badInput(e) == null && find(e, OutOfMemoryError.class) == null && !mentions(e, "java.lang.OutOfMemoryError")
                && missingFileSystem(e) == null && find(e, FSError.class) == null;
    }

    /** The jar that brings a file system scheme Hadoop has no implementation of on the classpath. */
    private static final Map<String, String> FILESYSTEM_JARS = Map.of("s3a", "hadoop-aws", "s3", "hadoop-aws",
            "s3n", "hadoop-aws", "gs", "gcs-connector", "abfs", "hadoop-azure", "abfss", "hadoop-azure",
            "wasb", "hadoop-azure", "wasbs", "hadoop-azure", "oss", "hadoop-aliyun", "cos", "hadoop-cos");

    private static final Pattern NO_FILESYSTEM = Pattern.compile("No FileSystem for scheme:? \"?([A-Za-z0-9+.-]+)\"?");

    /**
     * Hadoop's core-default.xml names an implementation for some schemes (fs.s3a.impl) whose jar may be missing:
     * then the failure is "Class org.apache.hadoop.fs.s3a.S3AFileSystem not found".
     */
    private static final Pattern MISSING_CLASS = Pattern.compile("Class (\\S*\\.)?(\\w*FileSystem) not found");
    private static final Map<String, String> SCHEME_OF_CLASS = Map.of("S3AFileSystem", "s3a",
            "GoogleHadoopFileSystem", "gs", "AzureBlobFileSystem", "abfs", "SecureAzureBlobFileSystem", "abfss",
            "NativeAzureFileSystem", "wasb", "AliyunOSSFileSystem", "oss");

    /** The scheme of a path whose Hadoop FileSystem is not on the classpath, or null. */
    private static String missingFileSystem(Throwable e) {
        for (Throwable c = e; c != null; c = c.getCause() == c ? null : c.getCause()) {
            String message = c.getMessage() == null ? "" : c.getMessage();
            Matcher m = NO_FILESYSTEM.matcher(message);
            if (m.find()) {
                return m.group(1);
            }
            Matcher missing = MISSING_CLASS.matcher(message);
            if (missing.find() && SCHEME_OF_CLASS.containsKey(missing.group(2))) {
                return SCHEME_OF_CLASS.get(missing.group(2));
            }
        }
        return null;
    }

    /**
     * An OutOfMemoryError, thrown on the driver or in a Spark task (then it arrives as the cause of a SparkException,
     * or only named in its message when the executor that ran out was lost).
     */
    private static String outOfMemory(Throwable e) {
        boolean inTask = false;
        for (Throwable c = e; c != null; c = c.getCause() == c ? null : c.getCause()) {
            inTask |= c instanceof SparkException;
        }
        return inTask ? "out of memory in a Spark task; lower --batch-windows / --window or raise the executor memory "
                + "(spark.executor.memory / -Xmx)"
                : "out of memory in the driver; lower --batch-windows / --window or raise the driver memory "
                + "(spark.driver.memory / -Xmx)";
    }

    private static <T extends Throwable> T find(Throwable e, Class<T> type) {
        for (Throwable c = e; c != null; c = c.getCause() == c ? null : c.getCause()) {
            if (type.isInstance(c)) {
                return type.cast(c);
            }
        }
        return null;
    }

    private static boolean mentions(Throwable e, String text) {
        for (Throwable c = e; c != null; c = c.getCause() == c ? null : c.getCause()) {
            if (c.getMessage() != null && c.getMessage().contains(text)) {
                return true;
            }
        }
        return false;
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
