package org.sparkmoe.driver;

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;

import java.io.IOException;
import java.io.UncheckedIOException;

/** Command-line paths resolved through the Hadoop FileSystem API (file://, hdfs://, s3a://). */
public final class Paths {
    private Paths() {
    }

    /** A fully qualified URI for {@code path}; relative local paths resolve against the working directory. */
    public static String qualify(String path, Configuration conf) {
        try {
            Path p = new Path(path);
            FileSystem fs = p.getFileSystem(conf);
            return fs.makeQualified(p).toString();
        } catch (IOException e) {
            throw new UncheckedIOException("resolving " + path + ": " + e.getMessage(), e);
        }
    }

    /** Throws "data file not found" / "data file is empty" before any Spark task reads it. */
    public static void requireNonEmptyFile(String uri, Configuration conf) {
        try {
            Path p = new Path(uri);
            FileSystem fs = p.getFileSystem(conf);
            if (!fs.exists(p)) {
                throw new IllegalArgumentException("data file not found: " + uri);
            }
            if (fs.getFileStatus(p).getLen() == 0) {
                throw new IllegalArgumentException("data file is empty: " + uri);
            }
        } catch (IOException e) {
            throw new UncheckedIOException("looking up " + uri + ": " + e.getMessage(), e);
        }
    }

    public static FileSystem fileSystem(String uri, Configuration conf) {
        try {
            return new Path(uri).getFileSystem(conf);
        } catch (IOException e) {
            throw new UncheckedIOException("opening the file system of " + uri + ": " + e.getMessage(), e);
        }
    }
}
