package org.sparkmoe.kernels;

import org.nd4j.linalg.api.memory.MemoryWorkspace;
import org.nd4j.linalg.api.memory.MemoryWorkspaceManager;
import org.nd4j.linalg.api.memory.conf.WorkspaceConfiguration;
import org.nd4j.linalg.api.memory.enums.AllocationPolicy;
import org.nd4j.linalg.api.memory.enums.LearningPolicy;
import org.nd4j.linalg.api.memory.enums.ResetPolicy;
import org.nd4j.linalg.api.memory.enums.SpillPolicy;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/**
 * One thread's native memory for the arrays of one step of an inference pass (a decoder layer, a block of logits),
 * reused by every step: an ND4J workspace that arrays are carved from while the step runs and that is rewound when it
 * ends. Without it every array of a step is a fresh allocation that libnd4j zero-fills (even when asked for an
 * uninitialised one) into pages the kernel must fault in and zero again, and frees only when the collector finds the
 * array: on the tiny eval about a quarter of a task's CPU time. The workspace learns its size in its first step
 * (arrays of that step are plain allocations), is reallocated larger when a step outgrows it, and keeps the largest
 * step's bytes for the thread's life: what the memory plan counts as a task slot's activations.
 * <p>
 * Whatever must outlive a step leaves it through {@link #keep}; every other array created in the step is invalid
 * after it, so a step may hand out only what it keeps. Caches that outlive a step (a thread's scratch) are made
 * {@link #outside} it.
 * <p>
 * A training pass (forward, loss, backward) can run in a second workspace of the thread, {@link #pass}: the backward
 * reads the forward's arrays, so nothing is rewound until the pass ends, and the workspace keeps every byte the pass
 * allocated (about the memory plan's activations per task slot) for the thread's life, or until {@link #releasePass}.
 */
public final class StepWorkspace {
    private static final String ID = "sparkmoe-step";
    private static final String PASS_ID = "sparkmoe-pass";
    private static final WorkspaceConfiguration CONFIG = WorkspaceConfiguration.builder()
            .initialSize(0)
            .policyAllocation(AllocationPolicy.STRICT)
            .policyLearning(LearningPolicy.FIRST_LOOP)
            .policySpill(SpillPolicy.REALLOCATE)
            .policyReset(ResetPolicy.BLOCK_LEFT)
            .build();

    private StepWorkspace() {
    }

    /** Starts a step on this thread: arrays created until the returned scope is closed live in the workspace. */
    public static MemoryWorkspace step() {
        return Nd4j.getWorkspaceManager().getAndActivateWorkspace(CONFIG, ID);
    }

    /** Starts a training pass on this thread: arrays created until the returned scope closes live in its workspace. */
    public static MemoryWorkspace pass() {
        return Nd4j.getWorkspaceManager().getAndActivateWorkspace(CONFIG, PASS_ID);
    }

    /**
     * Frees this thread's pass workspace, if it has one: for a task that ran many training passes and ends, whose
     * thread may next run other work (the workspace would otherwise hold its bytes for the thread's life).
     */
    public static void releasePass() {
        MemoryWorkspaceManager manager = Nd4j.getWorkspaceManager();
        if (manager.checkIfWorkspaceExists(PASS_ID)) {
            manager.destroyWorkspace(manager.getWorkspaceForCurrentThread(PASS_ID));
        }
    }

    /** {@code array} as an array that outlives the step (a copy when it lives in the workspace). */
    public static INDArray keep(INDArray array) {
        return array.detach();
    }

    /** A scope in which arrays are created outside any workspace (a cache made during a step). */
    public static MemoryWorkspace outside() {
        return Nd4j.getWorkspaceManager().scopeOutOfWorkspaces();
    }
}
