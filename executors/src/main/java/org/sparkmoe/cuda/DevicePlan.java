package org.sparkmoe.cuda;

/**
 * A routing plan on the device: offsets [E+1], tokenOfRow [N], weightOfRow [N] and rowOfPair [T·K] (the inverse
 * of perm: the plan row of pair t·K + k), for the gather, the grouped GEMMs and the combine. Built from the host
 * plan's arrays (routing.RoutingPlan), so that this backend knows buffers and offsets, not MoE types.
 */
public final class DevicePlan implements AutoCloseable {
    final DeviceBuffer offsets;
    final DeviceBuffer tokenOfRow;
    final DeviceBuffer weightOfRow;
    final DeviceBuffer rowOfPair;
    public final int tokens;
    public final int topK;
    public final int rows;

    /**
     * @param offsets     [E+1] expert e owns rows offsets[e]..offsets[e+1]-1
     * @param perm        [N] pair index t·K + k of each row
     * @param tokenOfRow  [N]
     * @param weightOfRow [N]
     */
    public DevicePlan(int[] offsets, int[] perm, int[] tokenOfRow, float[] weightOfRow, int topK) {
        int[] rowOfPairHost = new int[perm.length];
        for (int row = 0; row < perm.length; row++) {
            rowOfPairHost[perm[row]] = row;
        }
        this.rows = perm.length;
        this.topK = topK;
        this.tokens = rows / topK;
        this.offsets = DeviceBuffer.ofInts(offsets);
        this.tokenOfRow = DeviceBuffer.ofInts(tokenOfRow);
        this.weightOfRow = DeviceBuffer.ofFloats(weightOfRow);
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
