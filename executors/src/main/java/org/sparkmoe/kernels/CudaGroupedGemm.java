package org.sparkmoe.kernels;

import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.sparkmoe.cuda.CudaGemm;
import org.sparkmoe.cuda.CudaLibrary;
import org.sparkmoe.cuda.DeviceBuffer;
import org.sparkmoe.cuda.TaskGpu;

import java.util.IdentityHashMap;
import java.util.Map;

/**
 * {@link GroupedGemm} on the GPU ({@link CudaGemm}, the fp32 kernel): FLOAT arrays only. Operands are copied to
 * the device for each call and results back, except weights made {@link #resident}: those stay on the device
 * for this instance's life and are never copied again (frozen expert weights). Everything runs on one GPU, the one
 * Spark gave the task that made the instance ({@link TaskGpu}), whichever thread calls. Synchronized: one call at a
 * time per instance.
 */
public final class CudaGroupedGemm implements GroupedGemm {
    private final Map<Object, DeviceBuffer> resident = new IdentityHashMap<>();  // by residentKey
    private final int ordinal;      // the CUDA device of every buffer and launch

    /**
     * On the GPU of the task on this thread; throws {@link org.sparkmoe.cuda.CudaUnavailableException} without a GPU
     * or when that GPU is not visible here.
     */
    public CudaGroupedGemm() {
        ordinal = TaskGpu.ordinal();
        CudaLibrary.useDevice(ordinal);
    }

    /** The CUDA device this instance computes on. */
    public int ordinal() {
        return ordinal;
    }

    /** Keeps {@code w} (which must not change afterwards) on the device; later calls with it copy nothing. */
    public synchronized void resident(WeightStack w) {
        CudaLibrary.useDevice(ordinal);
        resident.computeIfAbsent(residentKey(w), k -> upload(w));
    }

    /** What identifies weights across calls: the stacked array they wrap (a new stack per call), else the stack. */
    private static Object residentKey(WeightStack w) {
        return w.stacked() != null ? w.stacked() : w;
    }

    @Override
    public synchronized void forward(INDArray x, WeightStack w, int[] offsets, INDArray y, boolean accumulate) {
        GroupedShapes.check("forward", x, w, y, offsets);
        CudaLibrary.useDevice(ordinal);
        int out = (int) w.rows();
        int in = (int) w.cols();
        try (Call c = new Call(offsets); DeviceBuffer dx = upload(x); DeviceBuffer dy = output(y, accumulate)) {
            CudaGemm.forward(dx, c.weight(w), dy, c.offsets, c.groups, c.rows, out, in, accumulate);
            download(dy, y);
        }
    }

    @Override
    public synchronized void backwardInput(INDArray dy, WeightStack w, int[] offsets, INDArray dx, boolean accumulate) {
        GroupedShapes.check("backwardInput", dx, w, dy, offsets);
        CudaLibrary.useDevice(ordinal);
        int out = (int) w.rows();
        int in = (int) w.cols();
        try (Call c = new Call(offsets); DeviceBuffer ddy = upload(dy); DeviceBuffer ddx = output(dx, accumulate)) {
            CudaGemm.backwardInput(ddy, c.weight(w), ddx, c.offsets, c.groups, c.rows, out, in, accumulate);
            download(ddx, dx);
        }
    }

    @Override
    public synchronized void backwardWeight(INDArray dy, INDArray x, int[] offsets, INDArray dw, boolean accumulate) {
        GroupedShapes.checkGradient("backwardWeight", x, dw, dy, offsets);
        CudaLibrary.useDevice(ordinal);
        int out = (int) dw.size(1);
        int in = (int) dw.size(2);
        try (Call c = new Call(offsets); DeviceBuffer ddy = upload(dy); DeviceBuffer dx = upload(x);
             DeviceBuffer ddw = output(dw, accumulate)) {
            CudaGemm.backwardWeight(ddy, dx, ddw, c.offsets, c.groups, c.rows, out, in, accumulate);
            download(ddw, dw);
        }
    }

    /** The per-call device state: the offsets, and weights copied for this call only. */
    private final class Call implements AutoCloseable {
        final DeviceBuffer offsets;
        final int groups;
        final int rows;
        private DeviceBuffer copied;

        Call(int[] offsets) {
            this.offsets = DeviceBuffer.ofInts(offsets);
            this.groups = offsets.length - 1;
            this.rows = offsets[groups];
        }

        DeviceBuffer weight(WeightStack w) {
            DeviceBuffer r = resident.get(residentKey(w));
            if (r != null) {
                return r;
            }
            copied = upload(w);
            return copied;
        }

        @Override
        public void close() {
            offsets.close();
            if (copied != null) {
                copied.close();
            }
        }
    }

    /** The weights as float32 'c'-order [G, out, in] on the device (widened on the host when stored narrower). */
    private static DeviceBuffer upload(WeightStack w) {
        return upload(w.stacked() != null && w.dataType() == DataType.FLOAT ? w.stacked() : w.toArray(DataType.FLOAT));
    }

    private static DeviceBuffer upload(INDArray a) {
        checkType(a);
        INDArray c = a.ordering() == 'c' && !a.isView() ? a : a.dup('c');
        return DeviceBuffer.ofFloats(c.data().asFloat());
    }

    private static DeviceBuffer output(INDArray a, boolean accumulate) {
        checkType(a);
        return accumulate ? upload(a) : DeviceBuffer.allocate(4 * a.length());
    }

    private static void download(DeviceBuffer from, INDArray into) {
        float[] v = from.readFloats((int) into.length());
        into.assign(Nd4j.create(v, into.shape(), 'c'));
    }

    private static void checkType(INDArray a) {
        if (a.dataType() != DataType.FLOAT) {
            throw new IllegalArgumentException("the CUDA grouped gemm needs FLOAT arrays, got " + a.dataType());
        }
    }
}
