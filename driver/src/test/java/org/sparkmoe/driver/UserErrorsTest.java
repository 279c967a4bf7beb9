package org.sparkmoe.driver;

import org.apache.spark.SparkException;
import org.junit.jupiter.api.Test;

import java.io.IOException;
import java.io.NotSerializableException;
import java.io.UncheckedIOException;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

class UserErrorsTest {

    @Test
    void badInputInsideSparkExceptionsIsNamedInOneLine() {
        Exception e = new SparkException("Job aborted", new RuntimeException("task failed",
                new IllegalArgumentException("data file not found: /x.txt\nsecond line")));
        assertFalse(UserErrors.isUnexpected(e));
        assertEquals("data file not found: /x.txt", UserErrors.message(e));
    }

    @Test
    void aClassThatCannotBeSerializedIsABugNotBadInput() {
        Exception e = new SparkException("Task not serializable",
                new NotSerializableException("org.sparkmoe.driver.train.RoundNode"));
        assertTrue(UserErrors.isUnexpected(e));
    }

    @Test
    void otherIoFailuresAreInputProblems() {
        assertFalse(UserErrors.isUnexpected(new UncheckedIOException("reading /x", new IOException("denied"))));
    }

    /** Hadoop wraps network failures (an unknown HDFS host arrives as an IllegalArgumentException): say which. */
    @Test
    void networkReasonsAreNamed() {
        assertEquals("unknown host nn.example", UserErrors.reason(new IllegalArgumentException(
                "java.net.UnknownHostException: nn.example", new java.net.UnknownHostException("nn.example"))));
        assertEquals("unknown host nn.example", UserErrors.reason(new IOException("wrapped",
                new java.net.UnknownHostException("nn.example"))));
        assertEquals("connection refused (nothing listening at localhost:9000)", UserErrors.reason(new IOException(
                "Call From vm/127.0.0.1 to localhost:9000 failed on connection exception: java.net.ConnectException: "
                        + "Connection refused; For more details see: http://wiki", new java.net.ConnectException())));
        assertEquals("denied", UserErrors.reason(new IOException("denied\nmore")));
    }

    /** An OutOfMemoryError used to exit 52 after 220 lines; on the driver or wrapped in a task failure: one line. */
    @Test
    void outOfMemoryIsOneLineNamingWhereAndWhatToLower() {
        OutOfMemoryError oom = new OutOfMemoryError("Java heap space");
        assertEquals("out of memory in the driver; lower --batch-windows / --window or raise the driver memory "
                + "(spark.driver.memory / -Xmx)", UserErrors.message(oom));
        assertFalse(UserErrors.isUnexpected(oom));
        Exception task = new SparkException("Job aborted due to stage failure: Task 0 in stage 1.0 failed 1 times, "
                + "most recent failure: Lost task 0.0 in stage 1.0 (TID 1): java.lang.OutOfMemoryError: Java heap space",
                oom);
        assertEquals("out of memory in a Spark task; lower --batch-windows / --window or raise the executor memory "
                + "(spark.executor.memory / -Xmx)", UserErrors.message(task));
        assertFalse(UserErrors.isUnexpected(task));
        // a lost executor: the error is only named in the message
        Exception lost = new SparkException("Job aborted: ... java.lang.OutOfMemoryError: Java heap space\n\tat ...");
        assertTrue(UserErrors.message(lost).startsWith("out of memory in a Spark task"));
    }

    /** Hadoop's FSError (a full local disk), when no atomic writer named the file: still one line. */
    @Test
    void fsErrorIsOneLine() throws ReflectiveOperationException {
        var constructor = org.apache.hadoop.fs.FSError.class.getDeclaredConstructor(Throwable.class);
        constructor.setAccessible(true);
        Error full = constructor.newInstance(new IOException("No space left on device"));
        assertEquals("the local file system failed: No space left on device", UserErrors.message(full));
        assertFalse(UserErrors.isUnexpected(full));
    }

    @Test
    void aMissingFileSystemNamesTheJar() {
        Exception e = new UncheckedIOException("cannot read s3a://bucket/m/config.json",
                new org.apache.hadoop.fs.UnsupportedFileSystemException("No FileSystem for scheme \"s3a\""));
        assertEquals("no Hadoop filesystem for scheme s3a; add hadoop-aws to the classpath", UserErrors.message(e));
        assertFalse(UserErrors.isUnexpected(e));
        // core-default.xml names S3AFileSystem for s3a: without hadoop-aws its class is missing
        assertEquals("no Hadoop filesystem for scheme s3a; add hadoop-aws to the classpath", UserErrors.message(
                new RuntimeException("java.lang.ClassNotFoundException: Class org.apache.hadoop.fs.s3a.S3AFileSystem "
                        + "not found", new ClassNotFoundException("Class org.apache.hadoop.fs.s3a.S3AFileSystem not found"))));
        assertEquals("no Hadoop filesystem for scheme foo; add the jar that implements it to the classpath",
                UserErrors.message(new IOException("No FileSystem for scheme: foo")));
    }
}
