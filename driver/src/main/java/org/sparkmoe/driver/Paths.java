package org.sparkmoe.driver;

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;
import org.sparkmoe.text.TextFiles;

import java.io.IOException;
import java.io.UncheckedIOException;

/** Command-line paths resolved through the Hadoop FileSystem API (file://, hdfs://, s3a://). */
public final class Paths {
    private Paths() {
    }

    /**
     * A fully qualified URI for {@code path}; relative local paths resolve against the working directory.
     * Throws naming the path when its file system cannot be reached (an unknown host, nothing listening).
     */
    public static String qualify(String path, Configuration conf) {
        try {
            Path p = new Path(path);
            FileSystem fs = p.getFileSystem(conf);
            return fs.makeQualified(p).toString();
        } catch (IOException | IllegalArgumentException e) {
            // Hadoop reports an unknown HDFS host as IllegalArgumentException("java.net.UnknownHostException: h")
            String message = "cannot open " + path + ": " + UserErrors.reason(e);
            throw new UncheckedIOException(message, e instanceof IOException io ? io : new IOException(message, e));
        }
    }

    /**
     * Throws, before any Spark task reads it, naming the file when it is not a non-empty, readable regular file
     * of UTF-8 text (streamed once through a decoder; see {@link TextFiles#requireUtf8Text}).
     */
    public static void requireTextFile(String uri, Configuration conf) {
        try {
            TextFiles.requireUtf8Text(new Path(uri), conf);
        } catch (UncheckedIOException e) {
            throw new UncheckedIOException("cannot read data file " + uri + ": " + UserErrors.reason(e.getCause()),
                    e.getCause());
        }
    }

    public static FileSystem fileSystem(String uri, Configuration conf) {
        try {
            return new Path(uri).getFileSystem(conf);
        } catch (IOException e) {
            throw new UncheckedIOException("opening the file system of " + uri + ": " + UserErrors.reason(e), e);
        }
    }
}
