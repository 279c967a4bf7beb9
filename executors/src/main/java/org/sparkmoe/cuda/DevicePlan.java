package org.sparkmoe.cuda;

import org.sparkmoe.moe.RoutingPlan;

/**
 * A {@link RoutingPlan} on the device: offsets [E+1], tokenOfRow [N], weightOfRow [N] and rowOfPair [T·K] (the
 * inverse of perm: the plan row of pair t·K + k), for the gather, the grouped GEMMs and the combine.
 */
public final class DevicePlan implements AutoCloseable {
    final DeviceBuffer offsets;
    final DeviceBuffer tokenOfRow;
    final DeviceBuffer weightOfRow;
    final DeviceBuffer rowOfPair;
    public final int tokens;
    public final int topK;
    public final int rows;

    public DevicePlan(RoutingPlan plan) {
        int[] rowOfPairHost = new int[plan.rows()];
        for (int row = 0; row < plan.rows(); row++) {
            rowOfPairHost[plan.perm[row]] = row;
        }
        this.rows = plan.rows();
        this.topK = plan.topK;
        this.tokens = rows / topK;
        this.offsets = DeviceBuffer.ofInts(plan.offsets);
        this.tokenOfRow = DeviceBuffer.ofInts(plan.tokenOfRow);
        this.weightOfRow = DeviceBuffer.ofFloats(plan.weightOfRow);
        this.rowOfPair = DeviceBuffer.ofInts(rowOfPairHost);
    }

    @Override
    public void close() {
        offsets.close();
        tokenOfRow.close();
        weightOfRow.close();
        rowOfPair.close();
    }
}
