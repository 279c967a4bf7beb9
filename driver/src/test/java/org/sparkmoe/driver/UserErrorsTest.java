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
}
