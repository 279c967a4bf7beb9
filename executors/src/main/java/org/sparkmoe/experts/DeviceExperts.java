package org.sparkmoe.experts;

import static org.nd4j.linalg.indexing.NDArrayIndex.all;
import static org.nd4j.linalg.indexing.NDArrayIndex.interval;

import java.lang.ref.Reference;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.FloatBuffer;
import java.util.Arrays;
import java.util.function.IntFunction;
import org.bytedeco.javacpp.BytePointer;
import org.bytedeco.javacpp.FloatPointer;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.sparkmoe.cuda.Bf16;
import org.sparkmoe.cuda.CudaException;
import org.sparkmoe.cuda.ExpertLayer;
import org.sparkmoe.cuda.ResidentExpertLayer;
import org.sparkmoe.kernels.GatedActivation;
import org.sparkmoe.kernels.NativeBuffers;
import org.sparkmoe.kernels.NativeElements;
import org.sparkmoe.kernels.WeightStack;
import org.sparkmoe.routing.RoutingPlan;
import org.sparkmoe.routing.Routes;

/**
 * {@link FullExperts}' forward and backward through one {@link ExpertLayer} that holds the layer's frozen weights
 * (on a GPU: {@link #cuda}), for FLOAT passes. What the layer takes is built here from FullExperts' terms:
 * <ul>
 *   <li>LoRA of rank R on a projection goes in as A [E, R', in] and s·B [E, out, R'] (the layer's scale is 1), zero
 *       past R up to the layer's rank R' (a multiple of {@value #RANK_STEP}); a projection without LoRA as zeros.
 *       Gradients come back as dA = dA'[:, :R, :] and dB = s·dB'[:, :, :R].</li>
 *   <li>The plan's arrays as they are; the routing weights' gradient from plan row order to pair order.</li>
 * </ul>
 * The layer is made on the first pass, at the smallest rank that holds its LoRA; a pass whose LoRA needs more makes a
 * new one (and closes the old). A {@link LoraExperts} instance is taken as fixed: its factors go to the layer when a
 * pass brings other instances than the layer holds (an adapter's once; training builds new instances for every step,
 * after the optimizer updated the arrays in place). One layer serves every task of its model on its device, one pass
 * at a time: it keeps the state of its last forward only, so a backward whose forward is no longer the last one runs
 * that forward again first (the same inputs and LoRA give the same state). Closing frees the layer (on eviction of
 * its model).
 */
public final class DeviceExperts implements AutoCloseable {
    /** The layer's LoRA rank is a multiple of this (the bf16 kernels' tiles). */
    public static final int RANK_STEP = 8;

    private final String name;                         // whose experts, for messages ("decoder layer 3")
    private final IntFunction<ExpertLayer> factory;    // rank → a layer holding the weights
    private ExpertLayer layer;                         // null until the first pass, and after close
    private long forwards;                             // forwards run on this instance; the layer holds the last's
    private LoraExperts[] uploaded;                    // the LoRA instances the layer holds (gate, up, down), or null
    private boolean closed;

    /** Where a model's full experts go: a device layer for decoder layer l's, or null to keep them off the device. */
    @FunctionalInterface
    public interface Placement {
        DeviceExperts place(int layer, ExpertWeights weights);
    }

    /**
     * @param name    whose experts these are, for error messages (e.g. "decoder layer 3")
     * @param factory makes a layer of the given LoRA rank with the weights in it
     */
    public DeviceExperts(String name, IntFunction<ExpertLayer> factory) {
        this.name = name;
        this.factory = factory;
    }

    /** The rank of the layer that holds LoRA of rank {@code loraRank} (0: none): a multiple of {@value #RANK_STEP}. */
    public static int layerRank(int loraRank) {
        return Math.max(RANK_STEP, (loraRank + RANK_STEP - 1) / RANK_STEP * RANK_STEP);
    }

    /** Whether the CUDA layer can run these experts: SwiGLU, no biases, D and I multiples of 8. */
    public static boolean fits(ExpertWeights w) {
        return fits(w.activation(), w.hasBiases(), w.hidden(), w.intermediate());
    }

    /** The rule of {@link #fits(ExpertWeights)} from the experts' activation, biases, D and I (a plan's config). */
    public static boolean fits(GatedActivation activation, boolean biases, long hidden, long intermediate) {
        return activation == GatedActivation.SWIGLU && !biases && hidden % RANK_STEP == 0
                && intermediate % RANK_STEP == 0;
    }

    /**
     * The experts of {@code w} on CUDA device {@code ordinal} in bf16, uploaded on the first pass from where they lie
     * (a mapped checkpoint's bf16 bytes as they are; other types widened and rounded one expert at a time).
     */
    public static DeviceExperts cuda(String name, ExpertWeights w, int ordinal) {
        if (!fits(w)) {
            throw new IllegalArgumentException("the CUDA expert layer runs SwiGLU experts without biases with D and I "
                    + "multiples of " + RANK_STEP + ", got " + w.activation() + (w.hasBiases() ? " with biases" : "")
                    + ", D=" + w.hidden() + ", I=" + w.intermediate());
        }
        WeightStack[] stacks = {w.w1(), w.w3(), w.w2()};   // ResidentExpertLayer.GATE, UP, DOWN
        return new DeviceExperts(name, rank -> ResidentExpertLayer.upload(ordinal, w.experts(), w.hidden(),
                w.intermediate(), rank, 1f, (projection, e) -> bf16(stacks[projection], e)));
    }

    /**
     * Matrix e of {@code w} as bf16 bytes [out, in] (little-endian): a view of the stored bytes when they are
     * 'c'-contiguous bf16 (a mapped checkpoint's), else a new buffer of the matrix widened and rounded.
     */
    static ByteBuffer bf16(WeightStack w, int e) {
        long n = w.rows() * w.cols();
        INDArray m = w.dataType() == DataType.BFLOAT16 ? w.matrix(e) : null;
        if (m != null && NativeElements.contiguous(m)) {
            long shift = m.offset() - m.data().offset();
            return new BytePointer(m.data().addressPointer()).position(2 * shift).limit(2 * (shift + n))
                    .asByteBuffer().order(ByteOrder.LITTLE_ENDIAN);
        }
        INDArray f = w.widened(e, DataType.FLOAT);                     // [out, in]
        ByteBuffer out = ByteBuffer.allocateDirect(Math.toIntExact(2 * n)).order(ByteOrder.LITTLE_ENDIAN);
        Bf16.round(view(f), out, (int) n);
        Reference.reachabilityFence(f);
        return out;
    }

    /** What a forward keeps for its backward: the inputs to run it again, and which forward of the layer it was. */
    record Pass(Routes routes, INDArray x, LoraExperts gate, LoraExperts up, LoraExperts down, ExpertLayer layer,
                long forward, INDArray out) implements ExpertFfn.Pass {
    }

    /** x [T, D] FLOAT routed by {@code routes}, LoRA per projection (null: none) → the pass with out [T, D]. */
    synchronized Pass forward(INDArray x, Routes routes, LoraExperts gate, LoraExperts up, LoraExperts down) {
        INDArray out = Nd4j.createUninitialized(DataType.FLOAT, x.shape(), 'c');
        try {
            run(x, routes, gate, up, down, out);
        } catch (CudaException e) {
            throw named(e);
        }
        return new Pass(routes, x, gate, up, down, layer, forwards, out);
    }

    /** {@code e} with whose experts failed and what a user can change (a GPU out of memory, mostly). */
    private CudaException named(CudaException e) {
        CudaException named = new CudaException(name + "'s experts on the GPU: " + e.getMessage() + " (the memory "
                + "plan's gpu line, --dry-run, says what each GPU needs; fewer --batch-windows or --layerwise need "
                + "less)");
        named.initCause(e);
        return named;
    }

    /** dOut [T, D] → dx, the routing weights' gradient and the LoRA gradients of the projections that have LoRA. */
    synchronized ExpertGradients backward(Pass p, INDArray dOut) {
        try {
            return runBackward(p, dOut);
        } catch (CudaException e) {
            throw named(e);
        }
    }

    private ExpertGradients runBackward(Pass p, INDArray dOut) {
        if (p.layer() != layer || p.forward() != forwards) {             // another pass ran since: run p's again
            INDArray again = Nd4j.createUninitialized(DataType.FLOAT, p.x().shape(), 'c');
            run(p.x(), p.routes(), p.gate(), p.up(), p.down(), again);
            NativeBuffers.free(again);
        }
        int e = layer.experts();
        int d = layer.hidden();
        int i = layer.intermediate();
        int r = layer.rank();
        RoutingPlan plan = p.routes().plan;
        INDArray[] raw = {Nd4j.createUninitialized(DataType.FLOAT, e, r, d), Nd4j.createUninitialized(DataType.FLOAT,
                e, i, r), Nd4j.createUninitialized(DataType.FLOAT, e, r, d), Nd4j.createUninitialized(DataType.FLOAT,
                e, i, r), Nd4j.createUninitialized(DataType.FLOAT, e, r, i), Nd4j.createUninitialized(DataType.FLOAT,
                e, d, r)};
        float[] dGates = new float[plan.rows()];
        INDArray dx = Nd4j.createUninitialized(DataType.FLOAT, dOut.shape(), 'c');
        INDArray dOutC = NativeElements.contiguous(dOut) ? dOut : dOut.dup('c');
        layer.backward(view(dOutC), view(dx), new ExpertLayer.Gradients(view(raw[0]), view(raw[1]), view(raw[2]),
                view(raw[3]), view(raw[4]), view(raw[5]), FloatBuffer.wrap(dGates)));
        Reference.reachabilityFence(dOutC);
        double[] dWeights = new double[plan.rows()];                      // pair order
        for (int row = 0; row < plan.rows(); row++) {
            dWeights[plan.perm[row]] = dGates[row];
        }
        ExpertGradients g = new ExpertGradients(dx, dWeights, gradients(p.gate(), raw[0], raw[1]),
                gradients(p.up(), raw[2], raw[3]), gradients(p.down(), raw[4], raw[5]));
        NativeBuffers.free(raw);                                          // the padded gradients, copied out above
        return g;
    }

    /** One forward on the layer (made or grown for the LoRA's rank), into out [T, D]. */
    private void run(INDArray x, Routes routes, LoraExperts gate, LoraExperts up, LoraExperts down, INDArray out) {
        if (closed) {
            throw new IllegalStateException("these device experts were closed (their model was evicted)");
        }
        int needed = layerRank(0);
        for (LoraExperts l : new LoraExperts[] {gate, up, down}) {
            if (l != null) {
                needed = Math.max(needed, layerRank(l.rank()));
            }
        }
        if (layer == null || layer.rank() < needed) {
            if (layer != null) {
                layer.close();
                layer = null;
                uploaded = null;
            }
            layer = factory.apply(needed);
        }
        if (uploaded == null || uploaded[0] != gate || uploaded[1] != up || uploaded[2] != down) {
            upload(gate, up, down);
        }
        RoutingPlan plan = routes.plan;
        INDArray xc = NativeElements.contiguous(x) ? x : x.dup('c');
        layer.forward(new ExpertLayer.Plan(plan.rows() / plan.topK, plan.topK, plan.offsets, plan.perm,
                plan.tokenOfRow, plan.weightOfRow), view(xc), view(out));
        Reference.reachabilityFence(xc);
        Reference.reachabilityFence(out);
        forwards++;
    }

    /** The layer takes these LoRA instances' factors, padded and scaled. */
    private void upload(LoraExperts gate, LoraExperts up, LoraExperts down) {
        int e = layer.experts();
        int d = layer.hidden();
        int i = layer.intermediate();
        FloatPointer[] padded = {padA(gate, e, d), padB(gate, e, i), padA(up, e, d), padB(up, e, i), padA(down, e, i),
                padB(down, e, d)};
        try {
            uploaded = null;                                                // a failed upload leaves nothing known
            layer.setLora(padded[0].asBuffer(), padded[1].asBuffer(), padded[2].asBuffer(), padded[3].asBuffer(),
                    padded[4].asBuffer(), padded[5].asBuffer());
            uploaded = new LoraExperts[] {gate, up, down};
        } finally {
            for (FloatPointer p : padded) {
                p.close();                                                  // freed now, not by the collector
            }
        }
    }

    /** A [E, R', in]: lora's A in the first R rows of each expert, zeros after (all zeros without LoRA). */
    private FloatPointer padA(LoraExperts lora, int experts, int in) {
        int r = layer.rank();
        FloatPointer out = zeros((long) experts * r * in);
        if (lora == null) {
            return out;
        }
        checkLora(lora, experts, in, -1);
        float[] row = new float[in];
        NativeElements a = NativeElements.of(lora.a());                   // [E, R, in]
        for (int e = 0; e < experts; e++) {
            for (int k = 0; k < lora.rank(); k++) {
                a.readFloats(((long) e * lora.rank() + k) * in, row, in);
                new FloatPointer(out).position((long) (e * r + k) * in).put(row, 0, in);
            }
        }
        return out;
    }

    /** s·B [E, out, R']: lora's B times its scale in the first R columns, zeros after (all zeros without LoRA). */
    private FloatPointer padB(LoraExperts lora, int experts, int outDim) {
        int r = layer.rank();
        FloatPointer out = zeros((long) experts * outDim * r);
        if (lora == null) {
            return out;
        }
        checkLora(lora, experts, -1, outDim);
        float s = (float) lora.scale();
        float[] row = new float[lora.rank()];
        NativeElements b = NativeElements.of(lora.b());                   // [E, out, R]
        for (int eo = 0; eo < experts * outDim; eo++) {
            b.readFloats((long) eo * lora.rank(), row, lora.rank());
            for (int k = 0; k < row.length; k++) {
                out.put((long) eo * r + k, s * row[k]);
            }
        }
        return out;
    }

    private static void checkLora(LoraExperts lora, int experts, int in, int out) {
        if (lora.a().dataType() != DataType.FLOAT || lora.experts() != experts || (in >= 0 && lora.in() != in)
                || (out >= 0 && lora.out() != out)) {
            throw new IllegalArgumentException("LoRA for a device layer of " + experts + " experts must be FLOAT and "
                    + "fit it, got A " + Arrays.toString(lora.a().shape()) + ", B "
                    + Arrays.toString(lora.b().shape()) + " " + lora.a().dataType());
        }
    }

    /** dA [E, R, in] and dB [E, out, R] of {@code lora} from the layer's dA' [E, R', in] and dB' [E, out, R']. */
    private static LoraGradients gradients(LoraExperts lora, INDArray dAPadded, INDArray dBPadded) {
        if (lora == null) {
            return null;
        }
        int r = lora.rank();
        INDArray dA = dAPadded.get(all(), interval(0, r), all()).dup('c');              // [E, R, in]
        INDArray dB = dBPadded.get(all(), all(), interval(0, r)).mul(lora.scale()).dup('c'); // [E, out, R]
        return new LoraGradients(dA, dB);
    }

    /** n zero floats in native memory, for the caller to close. */
    private static FloatPointer zeros(long n) {
        FloatPointer p = new FloatPointer(n);
        p.zero();
        return p;
    }

    /** The elements of a 'c'-contiguous FLOAT array as a buffer over its memory (keep the array reachable). */
    private static FloatBuffer view(INDArray a) {
        long shift = a.offset() - a.data().offset();
        return new FloatPointer(a.data().addressPointer()).position(shift).limit(shift + a.length()).asBuffer();
    }

    @Override
    public synchronized void close() {
        closed = true;
        if (layer != null) {
            layer.close();
            layer = null;
        }
    }
}
