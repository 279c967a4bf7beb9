package org.sparkmoe.mumoe;

import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Random;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * The parameters of a tensor-ring μMoE layer with one level of N experts and ranks (r1, r2, r3):
 * <pre>
 *   gate    // [I, N]        G: a = softmax(x·G)
 *   expert  // [r1, N, r2]   A_N
 *   in      // [r2, I, r3]   A_I
 *   out     // [r3, O, r1]   A_O
 * </pre>
 * so that W(n, i, o) = trace(A_N[:, n, :] · A_I[:, i, :] · A_O[:, o, :]). All of one type, FLOAT or DOUBLE; held,
 * not copied. Names: {@code gate.0}, {@code core.expert}, {@code core.in}, {@code core.out}.
 */
public final class TrWeights implements MumoeWeights {
    static final String LAYER = "μMoE TR";

    private final INDArray gate;
    private final INDArray expert;
    private final INDArray in;
    private final INDArray out;
    private final DataType dataType;

    public TrWeights(INDArray gate, INDArray expert, INDArray in, INDArray out) {
        if (expert == null || expert.rank() != 3 || in == null || in.rank() != 3 || out == null || out.rank() != 3) {
            throw new IllegalArgumentException(LAYER + ": the cores must have rank 3 ([r1, N, r2], [r2, I, r3], "
                    + "[r3, O, r1]), found " + shape(expert) + ", " + shape(in) + ", " + shape(out));
        }
        this.dataType = MumoeShapes.floating(LAYER, expert);
        long r1 = expert.size(0);
        long n = expert.size(1);
        long r2 = expert.size(2);
        long r3 = in.size(2);
        MumoeShapes.require(LAYER, "core A_I [r2, I, r3]", in, r2, in.size(1), r3);
        MumoeShapes.require(LAYER, "core A_O [r3, O, r1]", out, r3, out.size(1), r1);
        MumoeShapes.require(LAYER, "gate [I, N]", gate, in.size(1), n);
        MumoeShapes.requireType(LAYER, "core A_I", in, dataType);
        MumoeShapes.requireType(LAYER, "core A_O", out, dataType);
        MumoeShapes.requireType(LAYER, "gate", gate, dataType);
        for (long d : expert.shape()) {
            MumoeShapes.requirePositive(LAYER, "every core dimension", d);
        }
        MumoeShapes.requirePositive(LAYER, "every core dimension", r3);
        this.gate = gate;
        this.expert = expert;
        this.in = in;
        this.out = out;
    }

    /** Gaussian cores scaled so that W's entries are of order 1/√I; gate scale 1/√I. */
    public static TrWeights random(Random rnd, DataType type, long inputSize, long outputSize, long experts,
                                   long r1, long r2, long r3) {
        double s = Math.pow(r1 * r2 * r3, -1.0 / 3);
        return new TrWeights(CpWeights.gaussian(rnd, type, 1 / Math.sqrt(inputSize), inputSize, experts),
                CpWeights.gaussian(rnd, type, Math.sqrt(s), r1, experts, r2),
                CpWeights.gaussian(rnd, type, Math.sqrt(s) / Math.sqrt(inputSize), r2, inputSize, r3),
                CpWeights.gaussian(rnd, type, Math.sqrt(s), r3, outputSize, r1));
    }

    private static String shape(INDArray a) {
        return a == null ? "null" : java.util.Arrays.toString(a.shape());
    }

    public INDArray gate() {
        return gate;
    }

    public INDArray expert() {
        return expert;
    }

    public INDArray in() {
        return in;
    }

    public INDArray out() {
        return out;
    }

    public long experts() {
        return expert.size(1);
    }

    public long r1() {
        return expert.size(0);
    }

    public long r2() {
        return expert.size(2);
    }

    public long r3() {
        return in.size(2);
    }

    @Override
    public long inputSize() {
        return in.size(1);
    }

    @Override
    public long outputSize() {
        return out.size(1);
    }

    @Override
    public long[] expertDims() {
        return new long[] {experts()};
    }

    public DataType dataType() {
        return dataType;
    }

    @Override
    public Map<String, INDArray> parameters() {
        Map<String, INDArray> m = new LinkedHashMap<>();
        m.put("gate.0", gate);
        m.put("core.expert", expert);
        m.put("core.in", in);
        m.put("core.out", out);
        return Collections.unmodifiableMap(m);
    }
}
