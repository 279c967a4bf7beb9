package org.sparkmoe.tests;

import org.sparkmoe.driver.SparkMoe;

import java.io.PrintWriter;
import java.io.StringWriter;
import java.util.List;

/** One {@code sparkmoe} command line run in this JVM: its exit code and what it wrote to stderr. */
record CliRun(int exitCode, String err) {

    static CliRun sparkmoe(String... args) {
        StringWriter err = new StringWriter();
        int rc = SparkMoe.execute(new PrintWriter(err, true), args);
        return new CliRun(rc, err.toString());
    }

    static CliRun sparkmoe(List<String> args) {
        return sparkmoe(args.toArray(String[]::new));
    }

    String firstLine() {
        return err.lines().findFirst().orElse("");
    }
}
