package org.sparkmoe.mumoe;

import java.util.Arrays;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Random;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.indexing.NDArrayIndex;

/**
 * The factorised form of a flat μMoE layer used as an adapter: CP (ranks [R]) or tensor ring (ranks [r1, r2, r3]).
 * Builds a layer from its named parameters ({@link MumoeWeights#parameters()}' names) and starts a new one whose
 * output factor or core is zero, so that y = 0 for every x: an adapter beside a frozen projection starts as no
 * change, as LoRA's B = 0 does. Every other parameter then gets a zero gradient at the first step (dy reaches them
 * only through U⁽ᴼ⁾ or A_O) while the output factor's is dL/dy · h ≠ 0, so training moves it first.
 */
public enum MumoeForm {
    CP(1),
    TR(3);

    private final int ranks;

    MumoeForm(int ranks) {
        this.ranks = ranks;
    }

    /** How many ranks the form takes: 1 (CP's R) or 3 (TR's r1, r2, r3). */
    public int rankCount() {
        return ranks;
    }

    /** "cp" or "tr": the adapter config's and the --adapter flag's spelling (mumoe-cp, mumoe-tr). */
    public String id() {
        return name().toLowerCase(Locale.ROOT);
    }

    public static MumoeForm parse(String id, String source) {
        for (MumoeForm f : values()) {
            if (f.id().equals(id)) {
                return f;
            }
        }
        throw new IllegalArgumentException(source + ": unknown μMoE form '" + id + "', expected cp or tr");
    }

    /** Throws unless {@code r} holds {@link #rankCount()} ranks, each ≥ 1. */
    public void checkRanks(int[] r, String source) {
        if (r == null || r.length != ranks || Arrays.stream(r).anyMatch(v -> v < 1)) {
            throw new IllegalArgumentException(source + ": μMoE " + id() + " takes " + (ranks == 1 ? "one rank R"
                    : "three ranks r1,r2,r3") + " ≥ 1, got " + Arrays.toString(r));
        }
    }

    /**
     * A new layer [I → O] over {@code experts} experts: the gate and the other factors Gaussian as
     * {@link CpWeights#random} / {@link TrWeights#random} draw them from {@code rnd}, the output factor (CP U⁽ᴼ⁾
     * [O, R]) or core (TR A_O [r3, O, r1]) zero.
     */
    public MumoeWeights init(Random rnd, DataType type, long inputSize, long outputSize, long experts, int[] r) {
        checkRanks(r, "μMoE init");
        MumoeWeights w = this == CP ? CpWeights.random(rnd, type, inputSize, outputSize, r[0], experts)
                : TrWeights.random(rnd, type, inputSize, outputSize, experts, r[0], r[1], r[2]);
        INDArray out = w.parameters().get(outputName());
        out.assign(0);
        return w;
    }

    /** The name of the output factor or core, zero at the start. */
    public String outputName() {
        return this == CP ? "out" : "core.out";
    }

    /** The name of the expert factor (CP U⁽ᴺ⁾ [N, R]) or core (TR A_N [r1, N, r2]), whose index n is expert n. */
    public String expertName() {
        return this == CP ? "expert.0" : "core.expert";
    }

    /**
     * {@code params} with experts {@code muted} silenced: a copy of the expert factor with row n (CP U⁽ᴺ⁾[n, :]) or
     * slice n (TR A_N[:, n, :]) zero for each muted n, every other tensor shared. Since W(n, i, o) is linear in that
     * row (CP Σ_r U⁽ᴺ⁾[n,r]·U⁽ᴵ⁾[i,r]·U⁽ᴼ⁾[o,r], TR trace(A_N[:,n,:]·A_I[:,i,:]·A_O[:,o,:])), this sets W(n, :, :) = 0
     * exactly: y = Σ_{n not muted} aₙ(x)·Wₙᵀx, the gates a = softmax(x·G) still over all N experts and not
     * renormalised (the paper's manual expert removal). Throws naming {@code source} for an expert outside [0, N).
     */
    public Map<String, INDArray> muted(Map<String, INDArray> params, int[] muted, String source) {
        INDArray experts = need(params, expertName()).dup();          // CP [N, R], TR [r1, N, r2]
        long n = experts.size(this == CP ? 0 : 1);
        for (int e : muted) {
            if (e < 0 || e >= n) {
                throw new IllegalArgumentException(source + ": expert " + e + " is not one of the " + n
                        + " experts (0.." + (n - 1) + ")");
            }
            if (this == CP) {
                experts.getRow(e).assign(0);
            } else {
                experts.get(NDArrayIndex.all(), NDArrayIndex.point(e), NDArrayIndex.all()).assign(0);
            }
        }
        LinkedHashMap<String, INDArray> out = new LinkedHashMap<>(params);
        out.put(expertName(), experts);
        return Collections.unmodifiableMap(out);
    }

    /** The parameters' names and shapes, in {@link MumoeWeights#parameters()} order. */
    public Map<String, long[]> shapes(long inputSize, long outputSize, long experts, int[] r) {
        checkRanks(r, "μMoE shapes");
        if (this == CP) {
            return orderedMap("gate.0", new long[] {inputSize, experts}, "expert.0", new long[] {experts, r[0]},
                    "in", new long[] {inputSize, r[0]}, "out", new long[] {outputSize, r[0]});
        }
        return orderedMap("gate.0", new long[] {inputSize, experts}, "core.expert", new long[] {r[0], experts, r[1]},
                "core.in", new long[] {r[1], inputSize, r[2]}, "core.out", new long[] {r[2], outputSize, r[0]});
    }

    /** Σ of {@link #shapes}' element counts: the gate and the factors or cores. */
    public long parameterCount(long inputSize, long outputSize, long experts, int[] r) {
        return shapes(inputSize, outputSize, experts, r).values().stream()
                .mapToLong(s -> Arrays.stream(s).reduce(1, Math::multiplyExact)).sum();
    }

    /**
     * The elements a training forward keeps per token for the backward (beside x and y): CP the gates a [N] and
     * p, q, h [R] each; TR the gates [N], Pn [r1·r2], Pi [r2·r3] and M [r1·r3].
     */
    public long savedPerToken(long experts, int[] r) {
        return this == CP ? experts + 3L * r[0] : experts + (long) r[0] * r[1] + (long) r[1] * r[2] + (long) r[0] * r[2];
    }

    /** The layer over {@code params} (held, not copied), named as {@link #shapes} names them. */
    public MumoeLayer layer(Map<String, INDArray> params) {
        if (this == CP) {
            return new CpMumoe(new CpWeights(List.of(need(params, "gate.0")),
                    List.of(need(params, "expert.0")), need(params, "in"), need(params, "out")));
        }
        return new TrMumoe(new TrWeights(need(params, "gate.0"), need(params, "core.expert"), need(params, "core.in"),
                need(params, "core.out")));
    }

    private INDArray need(Map<String, INDArray> params, String name) {
        INDArray a = params.get(name);
        if (a == null) {
            throw new IllegalArgumentException("μMoE " + id() + ": no parameter '" + name + "', expected "
                    + (this == CP ? "gate.0, expert.0, in, out" : "gate.0, core.expert, core.in, core.out"));
        }
        return a;
    }

    private static Map<String, long[]> orderedMap(Object... kv) {
        LinkedHashMap<String, long[]> m = new LinkedHashMap<>();
        for (int i = 0; i < kv.length; i += 2) {
            m.put((String) kv[i], (long[]) kv[i + 1]);
        }
        return Collections.unmodifiableMap(m);
    }
}
