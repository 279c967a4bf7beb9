import org.apache.spark.SparkConf;
import org.apache.spark.api.java.JavaRDD;
import org.apache.spark.api.java.JavaSparkContext;
import org.apache.spark.storage.StorageLevel;

import java.util.Arrays;
import java.util.Collections;
import java.util.List;

/**
 * What a Spark job costs before any work: J jobs on an embedded local[2] master whose two tasks only read the clock,
 * on a plain RDD and on a persisted one behind a shuffle (the shape of a train round's RDD), each job's time from
 * the driver's call to its return and to its first task's start, as the median and the spread of the last J/2 (the
 * JIT warm). Spark at WARN, Kryo as SparkMoE sets it. Compiled against a built driver classpath, because Spark's
 * tasks cannot load classes from the single-file launcher (docs/benchmarks.md, "A round's floor: a Spark job"):
 *
 *   mkdir -p out/floor && javac -d out/floor -cp "$(cat driver/target/classpath.txt)" deploy/bench/SparkJobFloor.java
 *   java -Xmx1g $(sed -n 's/^sparkmoe.jvm.flags=//p' conf/jvm.properties) \
 *       -cp "out/floor:$(cat driver/target/classpath.txt)" SparkJobFloor 200
 */
public class SparkJobFloor {
    public static void main(String[] a) {
        if (a.length != 1) {
            System.err.println("usage: SparkJobFloor jobs");
            System.exit(2);
        }
        int jobs = Integer.parseInt(a[0]);
        SparkConf conf = new SparkConf().setMaster("local[2]").setAppName("spark-job-floor")
                .set("spark.ui.enabled", "false")
                .set("spark.serializer", "org.apache.spark.serializer.KryoSerializer");
        try (JavaSparkContext sc = new JavaSparkContext(conf)) {
            sc.setLogLevel("WARN");
            JavaRDD<Integer> plain = sc.parallelize(Arrays.asList(1, 2), 2);
            JavaRDD<int[]> persisted = plain.map(x -> new int[256]).repartition(2)
                    .persist(StorageLevel.MEMORY_AND_DISK_SER());
            persisted.count();
            double[][] plainMs = new double[2][jobs];
            double[][] persistedMs = new double[2][jobs];
            for (int j = 0; j < jobs; j++) {
                time(plain, plainMs, j);
                time(persisted, persistedMs, j);
            }
            report("plain RDD", plainMs, jobs);
            report("persisted RDD behind a shuffle", persistedMs, jobs);
        }
    }

    /** One job: [0] its whole time, [1] the time to its first task's start, in ms. */
    private static <T> void time(JavaRDD<T> rdd, double[][] ms, int j) {
        long begin = System.nanoTime();
        List<Long> started = rdd.map(x -> System.nanoTime()).collect();
        long end = System.nanoTime();
        ms[0][j] = (end - begin) / 1e6;
        ms[1][j] = (Collections.min(started) - begin) / 1e6;
    }

    private static void report(String what, double[][] ms, int jobs) {
        double[] job = Arrays.copyOfRange(ms[0], jobs / 2, jobs);
        double[] start = Arrays.copyOfRange(ms[1], jobs / 2, jobs);
        Arrays.sort(job);
        Arrays.sort(start);
        System.out.printf("%s, last %d jobs: job median %.1f ms (10%%-90%% %.1f-%.1f), first task started after "
                        + "%.1f ms (%.1f-%.1f)%n", what, job.length, job[job.length / 2], job[job.length / 10],
                job[job.length * 9 / 10], start[start.length / 2], start[start.length / 10],
                start[start.length * 9 / 10]);
    }
}
