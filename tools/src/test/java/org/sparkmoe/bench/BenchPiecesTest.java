package org.sparkmoe.bench;

import org.junit.jupiter.api.Test;
import org.sparkmoe.routing.RoutingPlan;

import java.util.HashSet;
import java.util.List;
import java.util.Set;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The pieces of {@code sparkmoe bench moe} that do not time anything: case selection, routing, the median. */
class BenchPiecesTest {

    @Test
    void selectKeepsTheOrderGivenAndDefaultsToAll() {
        assertEquals(MoeBench.CASES, MoeBench.select(null));
        assertEquals(MoeBench.CASES, MoeBench.select(" "));
        assertEquals(List.of("small-batch", "mixtral-like"),
                MoeBench.select("small-batch, mixtral-like").stream().map(MoeBench.Case::name).toList());
    }

    @Test
    void selectNamesTheUnknownCaseAndTheKnownOnes() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> MoeBench.select("mixtral"));
        assertEquals("unknown bench case 'mixtral', expected one of [mixtral-like, fine-grained, small-batch,"
                + " low-rank-100x]", e.getMessage());
    }

    @Test
    void weightTypesDefaultToFp32KeepTheOrderGivenAndNameTheUnknownOne() {
        assertEquals(List.of(MoeBench.Weights.FP32), MoeBench.Weights.select(null));
        assertEquals(List.of(MoeBench.Weights.BF16, MoeBench.Weights.FP32), MoeBench.Weights.select("bf16, fp32"));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> MoeBench.Weights.select("fp16"));
        assertEquals("unknown --dtype 'fp16', expected fp32 or bf16", e.getMessage());
    }

    @Test
    void syntheticRoutingPicksKDistinctExpertsPerTokenWithWeightsSummingToOne() {
        int tokens = 50;
        int experts = 8;
        int topK = 3;
        RoutingPlan plan = SyntheticRouting.routes(tokens, experts, topK, 42).plan;
        assertEquals(tokens * topK, plan.rows());
        List<Set<Integer>> expertsOfToken = new java.util.ArrayList<>();
        double[] weightSum = new double[tokens];
        for (int t = 0; t < tokens; t++) {
            expertsOfToken.add(new HashSet<>());
        }
        for (int e = 0; e < experts; e++) {
            for (int row = plan.offsets[e]; row < plan.offsets[e + 1]; row++) {
                int t = plan.tokenOfRow[row];
                assertTrue(expertsOfToken.get(t).add(e), "token " + t + " routed twice to expert " + e);
                weightSum[t] += plan.weightOfRow[row];
            }
        }
        for (int t = 0; t < tokens; t++) {
            assertEquals(topK, expertsOfToken.get(t).size(), "experts of token " + t);
            assertEquals(1.0, weightSum[t], 1e-6, "weight sum of token " + t);
        }
    }

    @Test
    void syntheticRoutingRefusesMoreExpertsPerTokenThanThereAre() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> SyntheticRouting.routes(4, 2, 3, 1));
        assertEquals("top-k 3 exceeds experts 2", e.getMessage());
    }

    @Test
    void stopwatchRunsWarmupsPlusRepeatsAndRefusesZeroRepeats() {
        int[] runs = {0};
        double ms = Stopwatch.medianMs(2, 3, () -> runs[0]++);
        assertEquals(5, runs[0]);
        assertTrue(ms >= 0, "median ms " + ms);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> Stopwatch.medianMs(0, 0, () -> { }));
        assertEquals("repeats must be at least 1, got 0", e.getMessage());
    }
}
