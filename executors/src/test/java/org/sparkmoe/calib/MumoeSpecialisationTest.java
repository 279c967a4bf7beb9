package org.sparkmoe.calib;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.List;
import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.factory.Nd4j;
import org.sparkmoe.model.AdapterTerms.Key;
import org.sparkmoe.model.AdapterTerms.Site;

/**
 * The μMoE specialisation numbers against values worked out by hand, and the gate mass as an exact mergeable sum;
 * a hierarchical term's mass per product expert n₁·N₂ + n₂ against Σ_t a₁(n₁)·a₂(n₂) summed here.
 */
class MumoeSpecialisationTest {
    @Test
    void filesOnDisjointExpertsShareLnFilesOfInformationAndEachListsItsOwnExperts() {
        // two files of 10 and 30 tokens; file 0 puts its mass on experts 0 and 1 (3:1), file 1 on expert 2 only
        MumoeSpecialisation s = MumoeSpecialisation.of(new double[][] {{7.5, 2.5, 0, 0}, {0, 0, 30, 0}},
                new long[] {10, 30}, 2);
        // X determines F, so I(F; X) = H(F) = −(¼ ln ¼ + ¾ ln ¾)
        assertEquals(-(0.25 * Math.log(0.25) + 0.75 * Math.log(0.75)), s.mutualInformation(), 1e-15);
        MumoeSpecialisation.FileView f0 = s.files().get(0);
        assertArrayEquals(new double[] {0.75, 0.25, 0, 0}, f0.share(), 0.0);
        assertEquals(-(0.75 * Math.log(0.75) + 0.25 * Math.log(0.25)), f0.entropy(), 1e-15);
        assertEquals(Math.exp(f0.entropy()), f0.effectiveExperts(), 1e-15);
        assertEquals(1.0, f0.topShare(), 0.0);
        // s[0, 0] = p(f0)·p(0|f0)·ln(p(0|f0)/p(0)) = ¼·¾·ln(¾ / (¼·¾)) = (3/16)·ln 4
        assertArrayEquals(new int[] {0, 1}, f0.specific());
        assertEquals(3.0 / 16 * Math.log(4), f0.specificity()[0], 1e-15);
        MumoeSpecialisation.FileView f1 = s.files().get(1);
        assertArrayEquals(new int[] {2}, f1.specific(), "only expert 2 has a positive term for file 1");
        assertEquals(1.0, f1.effectiveExperts(), 1e-15);
    }

    @Test
    void filesWithTheSameGateMassShareNoInformationAndNoSpecificExperts() {
        MumoeSpecialisation s = MumoeSpecialisation.of(new double[][] {{1, 2, 3, 2}, {2, 4, 6, 4}}, new long[] {8, 16},
                8);
        assertEquals(0.0, s.mutualInformation(), 1e-15);
        for (MumoeSpecialisation.FileView f : s.files()) {
            assertEquals(0, f.specific().length);
            assertEquals(1.0, f.topShare(), 1e-15);
        }
        // top 1 of {1, 2, 3, 2}/8
        assertEquals(3.0 / 8, MumoeSpecialisation.of(new double[][] {{1, 2, 3, 2}}, new long[] {8}, 1).files().get(0)
                .topShare(), 1e-15);
    }

    @Test
    void gateMassIsAnExactSumWhateverTheSplitAndMergeOrder() {
        List<Key> sites = List.of(new Key(0, Site.Q_PROJ), new Key(1, Site.MOE));
        Nd4j.getRandom().setSeed(9);
        var a = Nd4j.rand(DataType.FLOAT, 12, 5);
        var b = Nd4j.rand(DataType.FLOAT, 7, 5);
        MumoeGateStats whole = new MumoeGateStats(2, sites, 5);
        whole.add(1, sites.get(1), List.of(Nd4j.concat(0, a, b)));
        MumoeGateStats first = new MumoeGateStats(2, sites, 5);
        first.add(1, sites.get(1), List.of(b));
        MumoeGateStats second = new MumoeGateStats(2, sites, 5);
        second.add(1, sites.get(1), List.of(a));
        MumoeGateStats merged = second.merge(first);
        assertTrue(merged.sameAs(whole));
        assertEquals(19, merged.tokens(1, 1));
        assertEquals(0, merged.tokens(0, 1));
        double[] column = Nd4j.concat(0, a, b).castTo(DataType.DOUBLE).sum(0).toDoubleVector();
        assertArrayEquals(column, merged.mass(1, 1), 1e-12);
        assertFalse(merged.sameAs(new MumoeGateStats(2, sites, 5)));
    }

    @Test
    void aHierarchysExpertsAreTheProductsOfItsLevelsNumberedRowMajor() {
        List<Key> sites = List.of(new Key(2, Site.MOE));
        Nd4j.getRandom().setSeed(10);
        var a1 = Nd4j.rand(DataType.FLOAT, 6, 3);                         // [T, N₁]
        var a2 = Nd4j.rand(DataType.FLOAT, 6, 4);                         // [T, N₂]
        MumoeGateStats stats = new MumoeGateStats(1, sites, 3, 4);
        assertEquals(12, stats.experts());
        stats.add(0, sites.get(0), List.of(a1, a2));
        double[] mass = stats.mass(0, 0);
        assertEquals(12, mass.length);
        for (int n1 = 0; n1 < 3; n1++) {
            for (int n2 = 0; n2 < 4; n2++) {
                double expected = 0;
                for (int t = 0; t < 6; t++) {
                    expected += a1.getDouble(t, n1) * a2.getDouble(t, n2);
                }
                assertEquals(expected, mass[n1 * 4 + n2], 1e-12, "expert (" + n1 + ", " + n2 + ")");
            }
        }
        assertEquals(6, stats.tokens(0, 0));
        IllegalArgumentException flat = org.junit.jupiter.api.Assertions.assertThrows(IllegalArgumentException.class,
                () -> stats.add(0, sites.get(0), List.of(a1)));
        assertEquals("μMoE gates at layer 2 moe: 1 levels, expected 2", flat.getMessage());
    }
}
