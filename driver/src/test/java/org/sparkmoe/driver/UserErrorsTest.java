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
                new NotSerializableException("org.sparkmoe.driver.train.RoundSum"));
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
}
