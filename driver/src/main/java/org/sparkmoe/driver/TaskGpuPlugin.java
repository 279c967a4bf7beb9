package org.sparkmoe.driver;

import org.apache.spark.TaskContext;
import org.apache.spark.TaskFailedReason;
import org.apache.spark.api.plugin.DriverPlugin;
import org.apache.spark.api.plugin.ExecutorPlugin;
import org.apache.spark.api.plugin.SparkPlugin;
import org.apache.spark.resource.ResourceInformation;
import org.sparkmoe.cuda.TaskGpu;

/**
 * A Spark plugin ({@code spark.plugins}) that tells SparkMoE's CUDA code which GPU Spark's resource scheduler gave
 * each task ({@code spark.executor.resource.gpu.amount}, {@code spark.task.resource.gpu.amount}): when a task starts,
 * its thread's {@link TaskGpu} is the first address of the task's {@code gpu} resource; when it ends, it is cleared.
 * An executor with several GPUs thus runs each task on its own GPU, not all on device 0. {@link SparkContexts#conf}
 * adds it for every master whose executors are JVMs of their own (the embedded master schedules no resources).
 */
public final class TaskGpuPlugin implements SparkPlugin {
    /** The resource name Spark's GPU settings use. */
    static final String GPU = "gpu";

    @Override
    public DriverPlugin driverPlugin() {
        return null;
    }

    @Override
    public ExecutorPlugin executorPlugin() {
        return new ExecutorPlugin() {
            @Override
            public void onTaskStart() {
                ResourceInformation gpu = TaskContext.get().resourcesJMap().get(GPU);
                if (gpu != null && gpu.addresses().length > 0) {
                    TaskGpu.assign(gpu.addresses()[0]);
                } else {
                    TaskGpu.clear();
                }
            }

            @Override
            public void onTaskSucceeded() {
                TaskGpu.clear();
            }

            @Override
            public void onTaskFailed(TaskFailedReason reason) {
                TaskGpu.clear();
            }
        };
    }
}
