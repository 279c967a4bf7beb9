package org.sparkmoe.mumoe;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Map;
import java.util.Random;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.experts.GradientCheck;

/**
 * Muting experts ({@link MumoeForm#muted}) is removing them from the mixture: for the CP and the TR adapter forms,
 * the factorised layer over the muted parameters gives y = Σ_{n not muted} aₙ(x)·Wₙᵀx, where this test builds W
 * [N, I, O] from the unmuted factors in float64 loops (CP Σ_r U⁽ᴺ⁾[n,r]U⁽ᴵ⁾[i,r]U⁽ᴼ⁾[o,r], TR
 * trace(A_N[:,n,:]·A_I[:,i,:]·A_O[:,o,:])) and takes a from the unmuted layer; the gates stay those of all N experts
 * (not renormalised), and the parameters given are left as they were. A hierarchical CP layer's product expert
 * (n₁, n₂) is no row of any factor: its muted layer (rank R per muted expert wider) is checked against the
 * materialised layer {@link CpMumoeNaive} with those experts' α(n)·W(n)ᵀx subtracted.
 */
class MumoeMuteTest {
    private static final int T = 4;
    private static final int I = 5;
    private static final int O = 3;
    private static final int N = 6;
    private static final int[] MUTED = {1, 4};

    private static Map<String, INDArray> params(MumoeForm form) {
        MumoeWeights w = form == MumoeForm.CP ? CpWeights.random(new Random(5), DataType.DOUBLE, I, O, 3, N)
                : TrWeights.random(new Random(6), DataType.DOUBLE, I, O, new long[] {N}, 2, 3, 2);
        return w.parameters();
    }

    /** W [N][I][O] of {@code p}, in float64 loops. */
    private static double[][][] materialise(MumoeForm form, Map<String, INDArray> p) {
        double[][][] w = new double[N][I][O];
        for (int n = 0; n < N; n++) {
            for (int i = 0; i < I; i++) {
                for (int o = 0; o < O; o++) {
                    if (form == MumoeForm.CP) {
                        INDArray un = p.get("expert.0");
                        INDArray ui = p.get("in");
                        INDArray uo = p.get("out");
                        for (int r = 0; r < un.size(1); r++) {
                            w[n][i][o] += un.getDouble(n, r) * ui.getDouble(i, r) * uo.getDouble(o, r);
                        }
                    } else {
                        INDArray an = p.get("core.expert");     // [r1, N, r2]
                        INDArray ai = p.get("core.in");         // [r2, I, r3]
                        INDArray ao = p.get("core.out");        // [r3, O, r1]
                        for (int a = 0; a < an.size(0); a++) {
                            for (int b = 0; b < an.size(2); b++) {
                                for (int c = 0; c < ai.size(2); c++) {
                                    w[n][i][o] += an.getDouble(a, n, b) * ai.getDouble(b, i, c) * ao.getDouble(c, o, a);
                                }
                            }
                        }
                    }
                }
            }
        }
        return w;
    }

    /** For either gate: entmax-1.5's exact zeros are left as they are, as softmax's weights are. */
    @ParameterizedTest
    @EnumSource(GateActivation.class)
    void mutedLayersLeaveTheMutedExpertsOutOfTheMixtureWithoutRenormalising(GateActivation gate) {
        INDArray x = GradientCheck.gaussian(new Random(7), DataType.DOUBLE, 1.0, T, I);
        for (MumoeForm form : MumoeForm.values()) {
            Map<String, INDArray> p = params(form);
            INDArray expertsBefore = p.get(form.expertName()).dup();
            MumoePass full = form.layer(p, gate).forward(x);
            MumoePass muted = form.layer(form.muted(p, MUTED, "test"), gate).forward(x);
            assertArrayEquals(expertsBefore.data().asDouble(), p.get(form.expertName()).data().asDouble(),
                    form + ": the given parameters must stay as they were");
            assertArrayEquals(full.gates().get(0).data().asDouble(), muted.gates().get(0).data().asDouble(), 0.0,
                    form + ": the gates are over all N experts, not renormalised");

            double[][][] w = materialise(form, p);
            INDArray a = full.gates().get(0);                                    // [T, N]
            double worst = 0;
            double scale = 0;
            double removed = 0;
            for (int t = 0; t < T; t++) {
                for (int o = 0; o < O; o++) {
                    double kept = 0;
                    double gone = 0;
                    for (int n = 0; n < N; n++) {
                        double wx = 0;
                        for (int i = 0; i < I; i++) {
                            wx += x.getDouble(t, i) * w[n][i][o];
                        }
                        if (n == MUTED[0] || n == MUTED[1]) {
                            gone += a.getDouble(t, n) * wx;
                        } else {
                            kept += a.getDouble(t, n) * wx;
                        }
                    }
                    worst = Math.max(worst, Math.abs(muted.y().getDouble(t, o) - kept));
                    scale = Math.max(scale, Math.abs(kept));
                    removed = Math.max(removed, Math.abs(gone));
                }
            }
            assertTrue(removed > 1e-3 * scale, form + " " + gate + ": the muted experts must contribute, or the test proves nothing");
            assertTrue(worst <= 1e-12 * scale, form + " " + gate + ": max |muted − Σ_{n not muted} aₙWₙᵀx| = " + worst);
        }
    }

    /**
     * CP: the rank grows to R·(1 + k) for k muted experts; TR (ranks 2, 3, 4, 2): every rank grows by (1 + k), the
     * cores block-diagonal ({@link TrMute}).
     */
    @ParameterizedTest
    @EnumSource(MumoeForm.class)
    void mutingAProductExpertOfAHierarchySubtractsExactlyItsTerm(MumoeForm form) {
        int n1 = 3;
        int n2 = 4;
        int[] muted = {1 * n2 + 2, 2 * n2 + 0, 1 * n2 + 2};             // (1, 2), (2, 0), a duplicate
        MumoeWeights w = form == MumoeForm.CP ? CpWeights.random(new Random(8), DataType.DOUBLE, I, O, 3, n1, n2)
                : TrWeights.random(new Random(8), DataType.DOUBLE, I, O, new long[] {n1, n2}, 2, 3, 4, 2);
        Map<String, INDArray> p = w.parameters();
        String first = form == MumoeForm.CP ? "expert.0" : "core.expert.0";
        INDArray before = p.get(first).dup();
        INDArray x = GradientCheck.gaussian(new Random(9), DataType.DOUBLE, 1.0, T, I);
        MumoeLayer layer = form.layer(form.muted(p, muted, "test"), GateActivation.SOFTMAX);
        assertArrayEquals(form == MumoeForm.CP ? new long[] {I, 3 * 3} : new long[] {4 * 3, I, 2 * 3},
                layer.weights().parameters().get(form == MumoeForm.CP ? "in" : "core.in").shape(),
                "ranks ·(1 + 2 muted experts)");
        MumoePass m = layer.forward(x);
        assertArrayEquals(before.data().asDouble(), p.get(first).data().asDouble(), 0.0, "given tensors kept");

        MumoePass full = form == MumoeForm.CP ? new CpMumoeNaive((CpWeights) w, GateActivation.SOFTMAX).forward(x)
                : new TrMumoeNaive((TrWeights) w, GateActivation.SOFTMAX).forward(x);
        assertArrayEquals(full.gates().get(1).data().asDouble(), m.gates().get(1).data().asDouble(), 1e-15,
                "the gates are those of all N₁·N₂ experts");
        double[][][] dense = form == MumoeForm.CP ? materialiseLevels((CpWeights) w, n1, n2)
                : materialiseRing((TrWeights) w, n1, n2);                      // W [N₁·N₂][I][O]
        double worst = 0;
        double removed = 0;
        for (int t = 0; t < T; t++) {
            for (int o = 0; o < O; o++) {
                double gone = 0;
                for (int n : new int[] {muted[0], muted[1]}) {
                    double alpha = full.gates().get(0).getDouble(t, n / n2)          // a₁(n₁)·a₂(n₂)
                            * full.gates().get(1).getDouble(t, n % n2);
                    for (int i = 0; i < I; i++) {
                        gone += alpha * x.getDouble(t, i) * dense[n][i][o];
                    }
                }
                worst = Math.max(worst, Math.abs(m.y().getDouble(t, o) - (full.y().getDouble(t, o) - gone)));
                removed = Math.max(removed, Math.abs(gone));
            }
        }
        assertTrue(removed > 1e-3, "the muted experts must contribute, or the test proves nothing: " + removed);
        assertTrue(worst <= 1e-12, form + ": max |muted − (naive − Σ_muted α(n)·W(n)ᵀx)| = " + worst);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> form.muted(p, new int[] {n1 * n2}, "--mute-experts 12"));
        assertEquals("--mute-experts 12: expert 12 is not one of the 12 experts (0..11)", e.getMessage());
    }

    /** W(n₁·N₂ + n₂, i, o) = Σ_r U⁽ᴺ¹⁾[n₁,r]·U⁽ᴺ²⁾[n₂,r]·U⁽ᴵ⁾[i,r]·U⁽ᴼ⁾[o,r], in float64 loops. */
    private static double[][][] materialiseLevels(CpWeights w, int n1, int n2) {
        double[][][] dense = new double[n1 * n2][I][O];
        for (int n = 0; n < n1 * n2; n++) {
            for (int i = 0; i < I; i++) {
                for (int o = 0; o < O; o++) {
                    for (int r = 0; r < w.rank(); r++) {
                        dense[n][i][o] += w.experts().get(0).getDouble(n / n2, r)
                                * w.experts().get(1).getDouble(n % n2, r) * w.in().getDouble(i, r)
                                * w.out().getDouble(o, r);
                    }
                }
            }
        }
        return dense;
    }

    /** W(n₁·N₂ + n₂, i, o) = trace(A_N1[:,n₁,:]·A_N2[:,n₂,:]·A_I[:,i,:]·A_O[:,o,:]), in float64 loops. */
    private static double[][][] materialiseRing(TrWeights w, int n1, int n2) {
        INDArray a1 = w.experts().get(0);                                      // [r1, N₁, r2]
        INDArray a2 = w.experts().get(1);                                      // [r2, N₂, r3]
        double[][][] dense = new double[n1 * n2][I][O];
        for (int n = 0; n < n1 * n2; n++) {
            for (int i = 0; i < I; i++) {
                for (int o = 0; o < O; o++) {
                    for (int a = 0; a < w.rank(0); a++) {
                        for (int b = 0; b < w.rank(1); b++) {
                            for (int c = 0; c < w.rank(2); c++) {
                                for (int d = 0; d < w.rank(3); d++) {
                                    dense[n][i][o] += a1.getDouble(a, n / n2, b) * a2.getDouble(b, n % n2, c)
                                            * w.in().getDouble(c, i, d) * w.out().getDouble(d, o, a);
                                }
                            }
                        }
                    }
                }
            }
        }
        return dense;
    }

    @Test
    void anExpertOutsideTheLayerIsRefusedNamingIt() {
        Map<String, INDArray> p = params(MumoeForm.TR);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> MumoeForm.TR.muted(p, new int[] {N}, "--mute-experts 0.moe:6"));
        assertEquals("--mute-experts 0.moe:6: expert 6 is not one of the 6 experts (0..5)", e.getMessage());
    }
}
