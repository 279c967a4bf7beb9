package org.sparkmoe.tests;

import org.apache.hadoop.conf.Configuration;
import org.apache.spark.api.java.JavaSparkContext;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.sparkmoe.driver.SparkContexts;
import org.sparkmoe.driver.eval.EvalJob;
import org.sparkmoe.driver.eval.EvalPlan;
import org.sparkmoe.driver.eval.PerplexityReport;
import org.sparkmoe.model.ModelFolder;
import org.sparkmoe.model.MoeTransformer;
import org.sparkmoe.model.Perplexity;
import org.sparkmoe.text.TextFiles;
import org.sparkmoe.text.TextSplit;
import org.sparkmoe.text.Tokenizers;
import org.sparkmoe.text.Windows;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The eval Spark job on a real local[2] SparkContext: partitioning never changes a bit of the report. */
class EvalJobTest {
    private static final int WINDOW = 128;
    private static final int BATCH = 4;
    private static JavaSparkContext sc;
    private static String model;
    private static List<String> data;

    /** sysadmin.txt and the first 300,000 characters of fortunes.txt: 2 files, ~200 windows per split. */
    @BeforeAll
    static void startSpark(@TempDir Path dir) throws Exception {
        sc = SparkContexts.start("eval-job-test", "local[2]");
        model = Fixtures.tinyModel().toUri().toString();
        Path excerpt = dir.resolve("fortunes-excerpt.txt");
        Files.writeString(excerpt, Files.readString(Fixtures.corpus("fortunes.txt")).substring(0, 300_000));
        data = List.of(Fixtures.corpus("sysadmin.txt").toUri().toString(), excerpt.toUri().toString());
    }

    @AfterAll
    static void stopSpark() {
        sc.stop();
    }

    private static PerplexityReport run(TextSplit split, int partitions) {
        return EvalJob.run(sc, new EvalPlan(model, data, split, WINDOW, 2, BATCH, partitions));
    }

    @Test
    void onePartitionAndFourPartitionsGiveIdenticalJson() {
        String one = run(TextSplit.VALID, 1).toJson();
        String four = run(TextSplit.VALID, 4).toJson();
        assertEquals(one, four);
        assertTrue(one.contains("\"sysadmin.txt\"") && one.contains("\"fortunes-excerpt.txt\""), one);
    }

    /** Distributed equals local: the same NLL sums from a plain loop over the windows, no Spark. */
    @Test
    void sparkResultEqualsAPlainLoop() {
        PerplexityReport report = run(TextSplit.TEST, 3);
        MoeTransformer transformer = ModelFolder.load(new org.apache.hadoop.fs.Path(model), new Configuration());
        String path = data.get(0);
        int[] tokens = Tokenizers.cached(model).encode(TextSplit.TEST.apply(TextFiles.readUtf8(path)));
        int[][] windows = Windows.cut(tokens, WINDOW);
        double nll = 0;
        for (int start = 0; start < windows.length; start += BATCH) {
            double chunk = 0;
            for (double w : Perplexity.windowNll(transformer,
                    Arrays.copyOfRange(windows, start, Math.min(windows.length, start + BATCH)), 2)) {
                chunk += w;
            }
            nll += chunk;
        }
        PerplexityReport.Totals sysadmin = report.files().get("sysadmin.txt");
        assertEquals((long) windows.length * (WINDOW - 1), sysadmin.tokens());
        assertEquals(nll, sysadmin.nllSum(), 0.0);
        double perToken = sysadmin.nllSum() / sysadmin.tokens();
        assertTrue(perToken > 0.5 && perToken < Math.log(1024), "nll/token " + perToken + " is implausible");
        assertEquals(report.files().get("sysadmin.txt").tokens() + report.files().get("fortunes-excerpt.txt").tokens(),
                report.all().tokens());
    }
}
