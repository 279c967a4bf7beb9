package org.sparkmoe.cuda;

/**
 * The GPU Spark gave the task running on this thread: the first address of its {@code gpu} resource (set by the
 * driver module's executor plugin when the task starts, cleared when it ends), which the discovery script
 * ({@code deploy/gpu/getGpusResources.sh}) writes as a CUDA device ordinal. A thread with no assignment (the
 * embedded master, which schedules no resources; a task without a {@code gpu} request) uses device 0, as CUDA
 * itself does; {@code CUDA_VISIBLE_DEVICES} picks which physical GPU that is.
 */
public final class TaskGpu {
    private static final ThreadLocal<String> ADDRESS = new ThreadLocal<>();

    private TaskGpu() {
    }

    /** Records {@code address}, the task's GPU as Spark's resource scheduler names it, for this thread. */
    public static void assign(String address) {
        ADDRESS.set(address);
    }

    /** Forgets this thread's assignment (the task ended; Spark reuses the thread for other tasks). */
    public static void clear() {
        ADDRESS.remove();
    }

    /**
     * The CUDA device ordinal of this thread's task: its assigned address, else 0. An address that is not an ordinal
     * (a discovery script printing UUIDs) is refused in one line naming it.
     */
    public static int ordinal() {
        String address = ADDRESS.get();
        if (address == null) {
            return 0;
        }
        try {
            int ordinal = Integer.parseInt(address.trim());
            if (ordinal >= 0) {
                return ordinal;
            }
        } catch (NumberFormatException e) {
            // refused below
        }
        throw new IllegalArgumentException("Spark gave this task the GPU address '" + address + "'; --device cuda needs"
                + " CUDA device ordinals (0, 1, ...) from the GPU discovery script, as deploy/gpu/getGpusResources.sh"
                + " prints them");
    }
}
