package org.sparkmoe.train;

import org.nd4j.linalg.api.memory.MemoryWorkspace;
import org.nd4j.linalg.api.memory.conf.WorkspaceConfiguration;
import org.nd4j.linalg.api.memory.enums.AllocationPolicy;
import org.nd4j.linalg.api.memory.enums.LearningPolicy;
import org.nd4j.linalg.api.memory.enums.ResetPolicy;
import org.nd4j.linalg.api.memory.enums.SpillPolicy;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/**
 * The native memory of one training step's forward and backward, freed when the step ends instead of when the
 * garbage collector finds each array's wrapper. A step's activations live for the whole step, so their wrappers
 * survive young collections and are promoted; an old-generation collection, which a heap with little Java garbage
 * rarely runs, was then the only thing that freed them, and an executor's anonymous RSS rose from round to round.
 * Every ND4J array this thread allocates while the workspace is open lives in it (ND4J workspace, spilled to
 * separate allocations: no arena to size in advance) and is freed when it closes; {@link #keep} copies out what the
 * step returns. Per thread: a Spark task's step opens its own, so task slots do not share one.
 */
final class StepWorkspace implements AutoCloseable {
    private static final String ID = "sparkmoe-train-step";
    private static final WorkspaceConfiguration CONFIG = WorkspaceConfiguration.builder()
            .initialSize(0)
            .policyAllocation(AllocationPolicy.STRICT)
            .policyLearning(LearningPolicy.NONE)
            .policySpill(SpillPolicy.EXTERNAL)
            .policyReset(ResetPolicy.BLOCK_LEFT)
            .build();

    private final MemoryWorkspace workspace;

    private StepWorkspace(MemoryWorkspace workspace) {
        this.workspace = workspace;
    }

    /** Opens this thread's step workspace: ND4J arrays allocated from now on live until {@link #close}. */
    static StepWorkspace open() {
        return new StepWorkspace(Nd4j.getWorkspaceManager().getAndActivateWorkspace(CONFIG, ID));
    }

    /** {@code a} moved out of the workspace (a copy outside it), to outlive the step. */
    static INDArray keep(INDArray a) {
        return a.isAttached() ? a.detach() : a;
    }

    /** Frees every array allocated in the step. */
    @Override
    public void close() {
        workspace.close();
        Nd4j.getWorkspaceManager().destroyWorkspace(workspace);
    }
}
