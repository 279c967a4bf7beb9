package org.sparkmoe.mumoe;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Random;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.indexing.NDArrayIndex;

/**
 * The factorised form of a μMoE layer used as an adapter, over L ≥ 1 levels of experts [N_1, ..., N_L] with one gate
 * per level: CP (ranks [R]) or tensor ring (ranks [r1, ..., r_{L+2}], one per core of the ring: [r1, r2, r3] flat).
 * Builds a layer from its named parameters ({@link MumoeWeights#parameters()}' names) and starts a new one whose
 * output factor or core is zero, so that y = 0 for every x: an adapter beside a frozen projection starts as no change,
 * as LoRA's B = 0 does. Every other parameter then gets a zero gradient at the first step (dy reaches them only
 * through U⁽ᴼ⁾ or A_O) while the output factor's is dL/dy · h ≠ 0, so training moves it first. Expert n of a hierarchy is the product (n_1, ..., n_L), numbered
 * row-major: n = (...(n_1·N_2 + n_2)·N_3 + ...)·N_L + n_L.
 */
public enum MumoeForm {
    CP,
    TR;

    /** How many ranks the form takes over {@code levels} levels: 1 (CP's R) or L + 2 (TR's r1, ..., r_{L+2}). */
    public int rankCount(int levels) {
        return this == CP ? 1 : levels + 2;
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

    /** Throws unless {@code r} holds {@link #rankCount} ranks for {@code levels} levels, each ≥ 1. */
    public void checkRanks(int[] r, int levels, String source) {
        int count = rankCount(levels);
        if (r == null || r.length != count || Arrays.stream(r).anyMatch(v -> v < 1)) {
            throw new IllegalArgumentException(source + ": μMoE " + id() + " takes " + (this == CP ? "one rank R"
                    : levels == 1 ? "three ranks r1,r2,r3" : count + " ranks r1,...,r" + count + " for " + levels
                    + " expert levels (one per core of the ring)") + " ≥ 1, got " + Arrays.toString(r));
        }
    }

    /** Throws unless {@code experts} holds one or more levels, each ≥ 1. */
    public void checkLevels(long[] experts, String source) {
        if (experts == null || experts.length == 0 || Arrays.stream(experts).anyMatch(v -> v < 1)) {
            throw new IllegalArgumentException(source + ": μMoE " + id() + " takes expert counts N ≥ 1 (N1,N2,... "
                    + "for levels), got " + Arrays.toString(experts));
        }
    }

    /**
     * A new layer [I → O] over {@code experts} [N_1, ..., N_L] experts: the gates and the other factors Gaussian as
     * {@link CpWeights#random} / {@link TrWeights#random} draw them from {@code rnd}, the output factor (CP U⁽ᴼ⁾
     * [O, R]) or core (TR A_O [r_{L+2}, O, r1]) zero.
     */
    public MumoeWeights init(Random rnd, DataType type, long inputSize, long outputSize, long[] experts, int[] r) {
        checkLevels(experts, "μMoE init");
        checkRanks(r, experts.length, "μMoE init");
        MumoeWeights w = this == CP ? CpWeights.random(rnd, type, inputSize, outputSize, r[0], experts)
                : TrWeights.random(rnd, type, inputSize, outputSize, experts,
                        Arrays.stream(r).asLongStream().toArray());
        INDArray out = w.parameters().get(outputName());
        out.assign(0);
        return w;
    }

    /** The name of the output factor or core, zero at the start. */
    public String outputName() {
        return this == CP ? "out" : "core.out";
    }

    /** The name of a flat layer's expert factor (CP U⁽ᴺ⁾ [N, R]) or core (TR A_N [r1, N, r2]), index n expert n. */
    public String expertName() {
        return this == CP ? "expert.0" : "core.expert";
    }

    /**
     * {@code params} with experts {@code muted} silenced: y = Σ_{n not muted} aₙ(x)·Wₙᵀx exactly, the gates still
     * over all N experts and not renormalised (the paper's manual expert removal). Throws naming {@code source} for an
     * expert outside [0, N). A flat layer gets a copy of the expert factor with row n (CP U⁽ᴺ⁾[n, :]) or slice n (TR
     * A_N[:, n, :]) zero for each muted n, every other tensor shared: W(n, i, o) is linear in that row (CP
     * Σ_r U⁽ᴺ⁾[n,r]·U⁽ᴵ⁾[i,r]·U⁽ᴼ⁾[o,r], TR trace(A_N[:,n,:]·A_I[:,i,:]·A_O[:,o,:])), so W(n, :, :) = 0. A
     * hierarchical layer's expert (n_1, ..., n_L) is no row or slice of any factor or core; {@link #mutedLevels} (CP)
     * and {@link TrMute} (TR) subtract its term.
     */
    public Map<String, INDArray> muted(Map<String, INDArray> params, int[] muted, String source) {
        if (levels(params) > 1) {
            int[][] digits = mutedDigits(params, muted, source);
            return this == CP ? mutedLevels(params, digits) : TrMute.muted(params, digits);
        }
        INDArray experts = need(params, expertName()).dup();          // CP [N, R], TR [r1, N, r2]
        long n = experts.size(this == CP ? 0 : 1);
        for (int e : muted) {
            checkExpert(e, n, source);
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

    /**
     * A hierarchical CP layer with the product experts {@code muted} subtracted, as a CP layer of rank R·(1 + k) for k
     * muted experts m = (m_1, ..., m_L): W'(n) = W(n) − Σ_m [n = m]·W(m), and [n = m]·W(m)(i, o) =
     * Σ_r Π_l (δ_{n_l m_l}·U⁽ᴺˡ⁾[m_l, r]) · U⁽ᴵ⁾[i, r] · U⁽ᴼ⁾[o, r] is itself rank R, so each muted expert appends R
     * components: the level factors' rows m_l kept and every other row zero, U⁽ᴵ⁾ as it is, −U⁽ᴼ⁾. Per token the
     * layer then costs R·(1 + k)·(Σ N_l + I + O) beyond the gates, i.e. each muted expert's term
     * y −= a₁(m₁)···a_L(m_L)·W(m)ᵀx at O(R·(Σ N_l + I + O)). The gates are shared.
     */
    private Map<String, INDArray> mutedLevels(Map<String, INDArray> params, int[][] experts) {
        int levels = levels(params);
        LinkedHashMap<String, INDArray> out = new LinkedHashMap<>(params);
        for (int l = 0; l < levels; l++) {
            INDArray u = need(params, "expert." + l);                  // [N_l, R]
            INDArray[] blocks = new INDArray[1 + experts.length];
            blocks[0] = u;
            for (int k = 0; k < experts.length; k++) {
                int row = experts[k][l];                               // m_l
                INDArray only = Nd4j.zeros(u.dataType(), u.shape());  // [N_l, R]: row m_l of U⁽ᴺˡ⁾, zero elsewhere
                only.getRow(row).assign(u.getRow(row));
                blocks[1 + k] = only;
            }
            out.put("expert." + l, Nd4j.hstack(blocks));               // [N_l, R·(1 + k)]
        }
        INDArray in = need(params, "in");                              // [I, R]
        INDArray outFactor = need(params, "out");                      // [O, R]
        INDArray[] ins = new INDArray[1 + experts.length];
        INDArray[] outs = new INDArray[1 + experts.length];
        ins[0] = in;
        outs[0] = outFactor;
        for (int k = 0; k < experts.length; k++) {
            ins[1 + k] = in;
            outs[1 + k] = outFactor.neg();
        }
        out.put("in", Nd4j.hstack(ins));                               // [I, R·(1 + k)]
        out.put("out", Nd4j.hstack(outs));                             // [O, R·(1 + k)]
        return Collections.unmodifiableMap(out);
    }

    /**
     * The distinct experts of {@code muted} as their digits (m_1, ..., m_L) over the levels of {@code params}
     * (n = (...(m_1·N_2 + m_2)·N_3 + ...)·N_L + m_L); throws naming {@code source} for one outside [0, Π N_l).
     */
    private int[][] mutedDigits(Map<String, INDArray> params, int[] muted, String source) {
        int levels = levels(params);
        long[] dims = new long[levels];
        long n = 1;
        for (int l = 0; l < levels; l++) {
            dims[l] = this == CP ? need(params, "expert." + l).size(0)
                    : need(params, TrWeights.expertName(l, levels)).size(1);
            n = Math.multiplyExact(n, dims[l]);
        }
        int[] experts = Arrays.stream(muted).distinct().toArray();
        int[][] digits = new int[experts.length][levels];
        for (int k = 0; k < experts.length; k++) {
            checkExpert(experts[k], n, source);
            long rest = experts[k];
            for (int l = levels - 1; l >= 0; l--) {
                digits[k][l] = (int) (rest % dims[l]);
                rest /= dims[l];
            }
        }
        return digits;
    }

    private static void checkExpert(long e, long n, String source) {
        if (e < 0 || e >= n) {
            throw new IllegalArgumentException(source + ": expert " + e + " is not one of the " + n
                    + " experts (0.." + (n - 1) + ")");
        }
    }

    /** The levels L of {@code params}: how many gate.l it holds. */
    private static int levels(Map<String, INDArray> params) {
        int l = 0;
        while (params.containsKey("gate." + l)) {
            l++;
        }
        return l;
    }

    /** The parameters' names and shapes, in {@link MumoeWeights#parameters()} order. */
    public Map<String, long[]> shapes(long inputSize, long outputSize, long[] experts, int[] r) {
        checkLevels(experts, "μMoE shapes");
        checkRanks(r, experts.length, "μMoE shapes");
        LinkedHashMap<String, long[]> m = new LinkedHashMap<>();
        if (this == CP) {
            for (int l = 0; l < experts.length; l++) {
                m.put("gate." + l, new long[] {inputSize, experts[l]});
            }
            for (int l = 0; l < experts.length; l++) {
                m.put("expert." + l, new long[] {experts[l], r[0]});
            }
            m.put("in", new long[] {inputSize, r[0]});
            m.put("out", new long[] {outputSize, r[0]});
        } else {
            int levels = experts.length;
            for (int l = 0; l < levels; l++) {
                m.put("gate." + l, new long[] {inputSize, experts[l]});
            }
            for (int l = 0; l < levels; l++) {
                m.put(TrWeights.expertName(l, levels), new long[] {r[l], experts[l], r[l + 1]});
            }
            m.put("core.in", new long[] {r[levels], inputSize, r[levels + 1]});
            m.put("core.out", new long[] {r[levels + 1], outputSize, r[0]});
        }
        return Collections.unmodifiableMap(m);
    }

    /** Σ of {@link #shapes}' element counts: the gates and the factors or cores. */
    public long parameterCount(long inputSize, long outputSize, long[] experts, int[] r) {
        return shapes(inputSize, outputSize, experts, r).values().stream()
                .mapToLong(s -> Arrays.stream(s).reduce(1, Math::multiplyExact)).sum();
    }

    /**
     * The elements a training forward keeps per token for the backward (beside x and y): CP the gates a_l [N_l] and
     * p_l [R] of each level, q and h [R]; TR the gates a_l [N_l] and P_l [r_l·r_{l+1}] of each level, the chain
     * Q_l [r1·r_{l+1}] of each level after the first (Q_1 is P_1), Pi [r_{L+1}·r_{L+2}] and M [r1·r_{L+2}].
     */
    public long savedPerToken(long[] experts, int[] r) {
        checkLevels(experts, "μMoE memory");
        long gates = Arrays.stream(experts).sum();
        if (this == CP) {
            return gates + (experts.length + 2L) * r[0];
        }
        int levels = experts.length;
        long saved = gates + (long) r[levels] * r[levels + 1] + (long) r[0] * r[levels + 1];
        for (int l = 0; l < levels; l++) {
            saved += (long) r[l] * r[l + 1] + (l > 0 ? (long) r[0] * r[l + 1] : 0);
        }
        return saved;
    }

    /** The layer over {@code params} (held, not copied), named as {@link #shapes} names them, gated by {@code gate}. */
    public MumoeLayer layer(Map<String, INDArray> params, GateActivation gate) {
        if (this == CP) {
            List<INDArray> gates = new ArrayList<>();
            List<INDArray> experts = new ArrayList<>();
            for (int l = 0; l == 0 || params.containsKey("gate." + l); l++) {
                gates.add(need(params, "gate." + l));
                experts.add(need(params, "expert." + l));
            }
            return new CpMumoe(new CpWeights(gates, experts, need(params, "in"), need(params, "out")), gate);
        }
        int levels = Math.max(1, levels(params));
        List<INDArray> gates = new ArrayList<>();
        List<INDArray> experts = new ArrayList<>();
        for (int l = 0; l < levels; l++) {
            gates.add(need(params, "gate." + l));
            experts.add(need(params, TrWeights.expertName(l, levels)));
        }
        return new TrMumoe(new TrWeights(gates, experts, need(params, "core.in"), need(params, "core.out")), gate);
    }

    private INDArray need(Map<String, INDArray> params, String name) {
        INDArray a = params.get(name);
        if (a == null) {
            throw new IllegalArgumentException("μMoE " + id() + ": no parameter '" + name + "', expected "
                    + (this == CP ? "gate.l and expert.l per level l, in, out"
                    : "gate.l per level l, core.expert (flat) or core.expert.l per level l, core.in, core.out"));
        }
        return a;
    }
}
