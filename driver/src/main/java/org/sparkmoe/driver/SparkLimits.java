package org.sparkmoe.driver;

import com.sun.management.OperatingSystemMXBean;
import org.apache.spark.SparkConf;

import java.lang.management.ManagementFactory;
import java.util.Locale;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * What the executors and the driver of a job will have, read from the Spark settings before Spark starts (the
 * {@link MemoryPlan}'s limits).
 *
 * @param master             spark.master
 * @param slotsPerExecutor   task slots per executor JVM: N of local[N]; spark.executor.cores on a cluster
 * @param heapBytes          heap of an executor JVM: this JVM's -Xmx in embedded mode; spark.executor.memory
 * @param nativeBudgetBytes  memory an executor has beside its heap: this machine's memory less the heap in embedded
 *                           mode; spark.executor.memoryOverhead in a YARN or Kubernetes container; 0 = not known
 *                           to the driver (standalone, local-cluster), not checked; {@value #MEMORY_KEY}, when set,
 *                           less the heap (and, outside a container, the JVM's own), on any master
 * @param nativeBudgetSource where {@code nativeBudgetBytes} comes from, for messages
 * @param containerised      YARN or Kubernetes: the container is killed past heap + overhead
 * @param maxResultBytes     spark.driver.maxResultSize; 0 = unlimited
 * @param partitions         --partitions, else Spark's default parallelism where the settings give it; 0 = unknown
 * @param driverAveragingBytes train: the partials' bytes the driver of a round may read to average them
 *                           ({@link #driverAveragingSetting(SparkConf)})
 */
public record SparkLimits(String master, int slotsPerExecutor, long heapBytes, long nativeBudgetBytes,
                          String nativeBudgetSource, boolean containerised, long maxResultBytes, int partitions,
                          long driverAveragingBytes) {

    private static final Pattern LOCAL = Pattern.compile("local(\\[\\s*([0-9]+|\\*)\\s*(,\\s*[0-9]+\\s*)?])?");
    private static final Pattern LOCAL_CLUSTER =
            Pattern.compile("local-cluster\\[\\s*([0-9]+)\\s*,\\s*([0-9]+)\\s*,\\s*([0-9]+)\\s*]");
    /**
     * The Spark setting that declares the memory one executor has in all (heap, native memory and the pages of the
     * weights it maps), where the driver cannot know it (standalone) or should plan for less than it finds (a machine
     * shared with other work); it replaces this machine's memory in embedded mode and the container's size on YARN
     * and Kubernetes.
     */
    public static final String MEMORY_KEY = "spark.sparkmoe.executor.memory";
    /**
     * The Spark setting that bounds the bytes of partials the driver of a train round reads, averages and keeps the
     * mean of (one stage, no shuffle); larger states are averaged in the shuffle and kept on an executor.
     */
    public static final String DRIVER_AVERAGING_KEY = "spark.sparkmoe.train.driverAveraging";
    private static final String DRIVER_AVERAGING_DEFAULT = "64m";
    /**
     * The Spark setting (default true) that lets a train run on an embedded local master run the rounds up to a
     * checkpoint as one job whose tasks average among themselves (org.sparkmoe.driver.train.LocalRounds); false: one
     * job per round, as on a cluster.
     */
    public static final String LOCAL_ROUNDS_KEY = "spark.sparkmoe.train.localRounds";
    /** Spark's floor for the default executor memory overhead. */
    private static final long MIN_OVERHEAD = 384L << 20;

    /** The limits of a job that will run with {@code conf} (as {@link SparkContexts#conf} builds it). */
    public static SparkLimits of(SparkConf conf, Integer partitionsFlag) {
        String master = conf.get("spark.master").trim();
        long maxResult = maxResultBytes(conf);
        long driverAveraging = driverAveragingSetting(conf);
        long declared = declaredMemory(conf);
        int slots = embeddedSlots(master);
        if (slots > 0) {
            long heap = Runtime.getRuntime().maxMemory();
            long physical = declared > 0 ? declared : physicalMemory();
            return new SparkLimits(master, slots, heap, Math.max(1, physical - heap - MemoryPlan.JVM_OVERHEAD),
                    (declared > 0 ? MEMORY_KEY + " " : "this machine's memory ") + MemoryPlan.size(physical)
                            + " less the heap (-Xmx) and the JVM's own",
                    false, maxResult, partitionsFlag != null ? partitionsFlag : slots, driverAveraging);
        }
        int cores = conf.getInt("spark.executor.cores", 1);
        long heap = conf.getSizeAsBytes("spark.executor.memory", "1g");
        Matcher cluster = LOCAL_CLUSTER.matcher(master);
        if (cluster.matches()) {
            cores = Integer.parseInt(cluster.group(2));
            heap = Long.parseLong(cluster.group(3)) << 20;
        }
        int partitions = partitionsFlag != null ? partitionsFlag : conf.getInt("spark.default.parallelism", 0);
        boolean containerised = master.equals("yarn") || master.startsWith("k8s://");
        if (!containerised) {
            return declared > 0 ? new SparkLimits(master, cores, heap, Math.max(1, declared - heap
                    - MemoryPlan.JVM_OVERHEAD), MEMORY_KEY + " " + MemoryPlan.size(declared) + " less the heap "
                    + "(spark.executor.memory) and the JVM's own", false, maxResult, partitions, driverAveraging)
                    : new SparkLimits(master, cores, heap, 0, "not known to the driver", false, maxResult, partitions,
                    driverAveraging);
        }
        if (declared > 0) {
            return new SparkLimits(master, cores, heap, Math.max(1, declared - heap), MEMORY_KEY + " "
                    + MemoryPlan.size(declared) + " less the heap (spark.executor.memory)", true, maxResult, partitions,
                    driverAveraging);
        }
        long overhead = conf.contains("spark.executor.memoryOverhead")
                ? conf.getSizeAsMb("spark.executor.memoryOverhead", "384") << 20
                : Math.max(MIN_OVERHEAD, (long) (conf.getDouble("spark.executor.memoryOverheadFactor", 0.1) * heap));
        return new SparkLimits(master, cores, heap, overhead, "spark.executor.memoryOverhead " + MemoryPlan.size(overhead)
                + " (a container holds spark.executor.memory + memoryOverhead)", true, maxResult, partitions,
                driverAveraging);
    }

    /** The task threads of an embedded local master (N of local[N]); 0 for any other master. */
    public static int embeddedSlots(String master) {
        Matcher local = LOCAL.matcher(master.trim());
        if (!local.matches()) {
            return 0;
        }
        return local.group(2) == null ? 1 : local.group(2).equals("*") ? Runtime.getRuntime().availableProcessors()
                : Integer.parseInt(local.group(2));
    }

    /**
     * The memory one executor has in all: heap, the JVM's own (outside a container, where the budget excludes it)
     * and the native budget; 0 when not known.
     */
    public long memoryBytes() {
        return nativeBudgetBytes == 0 ? 0 : heapBytes + nativeBudgetBytes + (containerised ? 0 : MemoryPlan.JVM_OVERHEAD);
    }

    /** spark.driver.maxResultSize in bytes; 0 = unlimited. */
    private static long maxResultBytes(SparkConf conf) {
        return conf.getSizeAsBytes("spark.driver.maxResultSize", "1g");
    }

    /**
     * The partials' bytes the driver of a train round may read to average them: {@value #DRIVER_AVERAGING_KEY}
     * (default {@value #DRIVER_AVERAGING_DEFAULT}; 0 = always average on the executors); refuses a value that is not
     * a size, naming the setting.
     */
    public static long driverAveragingSetting(SparkConf conf) {
        String value = conf.get(DRIVER_AVERAGING_KEY, DRIVER_AVERAGING_DEFAULT);
        try {
            long bytes = conf.getSizeAsBytes(DRIVER_AVERAGING_KEY, DRIVER_AVERAGING_DEFAULT);
            if (bytes >= 0) {
                return bytes;
            }
        } catch (NumberFormatException e) {
            // named below
        }
        throw new IllegalArgumentException(DRIVER_AVERAGING_KEY + "=" + value + " in the Spark configuration is not "
                + "a size such as 64m or 0");
    }

    /** {@value #MEMORY_KEY} in bytes, or 0 when not set; refuses a value that is not a size, naming the setting. */
    private static long declaredMemory(SparkConf conf) {
        if (!conf.contains(MEMORY_KEY)) {
            return 0;
        }
        String value = conf.get(MEMORY_KEY);
        try {
            long bytes = conf.getSizeAsBytes(MEMORY_KEY);
            if (bytes <= 0) {
                throw new NumberFormatException("not positive");
            }
            return bytes;
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException(MEMORY_KEY + "=" + value + " in the Spark configuration is not a size "
                    + "such as 64g or 512m");
        }
    }

    /** "local[2], heap 1.00 GiB" and the like, for the plan's first line. */
    public String describe() {
        return String.format(Locale.ROOT, "%s, heap %s", master, MemoryPlan.size(heapBytes));
    }

    /** What to change when native memory over the budget is {@code needBytes}. */
    String raiseHint(long needBytes) {
        if (containerised) {
            return "raise spark.executor.memoryOverhead to at least " + ((needBytes >> 20) + 1) + "m, or lower "
                    + "spark.executor.cores";
        }
        return "run fewer task slots per JVM (--master local[N])";
    }

    private static long physicalMemory() {
        if (ManagementFactory.getOperatingSystemMXBean() instanceof OperatingSystemMXBean os) {
            return os.getTotalMemorySize();
        }
        return Long.MAX_VALUE / 4;
    }
}
