package org.sparkmoe.experts;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.ByteBuffer;
import java.nio.FloatBuffer;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.sparkmoe.cuda.Bf16;
import org.sparkmoe.cuda.CudaException;
import org.sparkmoe.cuda.ExpertLayer;
import org.sparkmoe.cuda.ReferenceExpertLayer;
import org.sparkmoe.kernels.Nd4jGroupedGemm;
import org.sparkmoe.kernels.WeightStack;
import org.sparkmoe.routing.Routes;

/**
 * {@link DeviceExperts}: FullExperts through an expert layer that holds the weights, checked with the float64
 * {@link ReferenceExpertLayer} in place of the GPU against FullExperts on the CPU. What is checked is the glue the
 * GPU runs too: LoRA padded to the layer's rank with each projection's scale folded into B, projections without
 * LoRA, the gradients unpadded and unfolded, the routing weights' gradient from plan rows to pairs, interleaved
 * passes, a layer grown for a larger rank, and closing.
 */
class DeviceExpertsTest {
    private static final int E = 4;
    private static final int D = 16;
    private static final int I = 24;
    private static final int T = 10;
    private static final int K = 2;
    private static final double TOLERANCE = 1e-5;   // float32 FullExperts against a float64 reference

    private final INDArray w1 = Nd4j.rand(DataType.FLOAT, E, I, D).subi(0.5);
    private final INDArray w3 = Nd4j.rand(DataType.FLOAT, E, I, D).subi(0.5);
    private final INDArray w2 = Nd4j.rand(DataType.FLOAT, E, D, I).subi(0.5);
    private final ExpertWeights weights = new ExpertWeights(w1, w3, w2);
    private final List<ReferenceExpertLayer> made = new ArrayList<>();

    private DeviceExperts device() {
        return new DeviceExperts("layer 0", rank -> {
            ReferenceExpertLayer layer = new ReferenceExpertLayer(E, D, I, rank, 1.0, w1.data().asFloat(),
                    w3.data().asFloat(), w2.data().asFloat());
            made.add(layer);
            return layer;
        });
    }

    private static LoraExperts lora(int in, int out, int rank, double alpha, long seed) {
        Nd4j.getRandom().setSeed(seed);
        return new LoraExperts(Nd4j.rand(DataType.FLOAT, E, rank, in).subi(0.5),
                Nd4j.rand(DataType.FLOAT, E, out, rank).subi(0.5), alpha);
    }

    private static INDArray input(long seed) {
        Nd4j.getRandom().setSeed(seed);
        return Nd4j.rand(DataType.FLOAT, T, D).subi(0.5);
    }

    private static Routes routes(INDArray x, long seed) {
        Nd4j.getRandom().setSeed(seed);
        return CpExpertsTest.route(x, Nd4j.rand(DataType.FLOAT, E, D).subi(0.5), K);
    }

    @Test
    void forwardAndBackwardMatchTheCpuWithLoraPaddedAndScaled() {
        // gate rank 4 (α 8), up none, down rank 12 (α 6): the layer is made at rank 16
        LoraExperts gate = lora(D, I, 4, 8, 1);
        LoraExperts down = lora(I, D, 12, 6, 2);
        FullExperts cpu = new FullExperts(weights, gate, null, down, new Nd4jGroupedGemm());
        FullExperts onDevice = new FullExperts(weights, new Nd4jGroupedGemm(), device()).withLora(gate, null, down);
        INDArray x = input(3);
        Routes routes = routes(x, 4);
        INDArray dOut = input(5);

        ExpertFfn.Pass expected = cpu.forward(x, routes);
        ExpertFfn.Pass actual = onDevice.forward(x, routes);
        assertEquals(1, made.size());
        assertEquals(16, made.get(0).rank());
        assertClose(expected.out(), actual.out(), "out");
        assertNull(onDevice.routedRows(actual), "a device pass keeps its rows on the device");

        ExpertGradients want = cpu.backward(expected, dOut);
        ExpertGradients got = onDevice.backward(actual, dOut);
        assertClose(want.dx(), got.dx(), "dx");
        assertClose(Nd4j.createFromArray(want.dWeights()), Nd4j.createFromArray(got.dWeights()), "dWeights");
        assertClose(want.gate().dA(), got.gate().dA(), "gate dA");
        assertClose(want.gate().dB(), got.gate().dB(), "gate dB");
        assertNull(got.up(), "no LoRA on up: no gradient");
        assertClose(want.down().dA(), got.down().dA(), "down dA");
        assertClose(want.down().dB(), got.down().dB(), "down dB");
    }

    @Test
    void withoutLoraTheLayerRunsZeroFactors() {
        FullExperts cpu = new FullExperts(weights, new Nd4jGroupedGemm());
        FullExperts onDevice = new FullExperts(weights, new Nd4jGroupedGemm(), device());
        INDArray x = input(6);
        Routes routes = routes(x, 7);
        assertClose(cpu.forward(x, routes).out(), onDevice.forward(x, routes).out(), "out");
        assertEquals(DeviceExperts.RANK_STEP, made.get(0).rank());
        ExpertGradients g = onDevice.backward(onDevice.forward(x, routes), input(8));
        assertClose(cpu.backward(cpu.forward(x, routes), input(8)).dx(), g.dx(), "dx");
        assertNull(g.gate());
    }

    @Test
    void aBackwardAfterAnotherPassesForwardRunsItsOwnForwardAgain() {
        LoraExperts up = lora(D, I, 8, 16, 9);
        DeviceExperts device = device();
        FullExperts cpu = new FullExperts(weights, null, up, null, new Nd4jGroupedGemm());
        FullExperts onDevice = new FullExperts(weights, new Nd4jGroupedGemm(), device).withLora(null, up, null);
        INDArray xa = input(10);
        INDArray xb = input(11);
        Routes ra = routes(xa, 12);
        Routes rb = routes(xb, 13);
        ExpertFfn.Pass a = onDevice.forward(xa, ra);
        ExpertFfn.Pass b = onDevice.forward(xb, rb);      // the layer now holds b's state
        INDArray dOut = input(14);
        ExpertGradients ga = onDevice.backward(a, dOut);
        ExpertGradients gb = onDevice.backward(b, dOut);
        ExpertGradients wa = cpu.backward(cpu.forward(xa, ra), dOut);
        ExpertGradients wb = cpu.backward(cpu.forward(xb, rb), dOut);
        assertClose(wa.dx(), ga.dx(), "dx of the first pass");
        assertClose(wa.up().dB(), ga.up().dB(), "up dB of the first pass");
        assertClose(wb.dx(), gb.dx(), "dx of the second pass");
        assertClose(wb.up().dA(), gb.up().dA(), "up dA of the second pass");
        assertEquals(1, made.size(), "one layer for both passes");
    }

    @Test
    void aLargerRankMakesANewLayerAndClosingFreesIt() {
        DeviceExperts device = device();
        FullExperts onDevice = new FullExperts(weights, new Nd4jGroupedGemm(), device);
        INDArray x = input(15);
        Routes routes = routes(x, 16);
        onDevice.withLora(lora(D, I, 2, 4, 17), null, null).forward(x, routes);
        assertEquals(8, made.get(0).rank());
        LoraExperts wide = lora(D, I, 9, 4, 18);
        FullExperts adapted = onDevice.withLora(wide, null, null);
        ExpertFfn.Pass pass = adapted.forward(x, routes);
        assertEquals(2, made.size());
        assertTrue(made.get(0).closed(), "the rank-8 layer is closed when the rank-16 one replaces it");
        assertEquals(16, made.get(1).rank());
        FullExperts cpu = new FullExperts(weights, wide, null, null, new Nd4jGroupedGemm());
        assertClose(cpu.forward(x, routes).out(), pass.out(), "out at rank 9 in a rank-16 layer");

        device.close();
        assertTrue(made.get(1).closed());
        IllegalStateException e = assertThrows(IllegalStateException.class, () -> onDevice.forward(x, routes));
        assertTrue(e.getMessage().contains("evicted"), e.getMessage());
    }

    /**
     * An adapter's LoRA instances go to the layer once; a training step's new instances over arrays the optimizer
     * changed in place go again, and the outputs follow the new values.
     */
    @Test
    void loraInstancesGoToTheLayerOnceEach() {
        int[] uploads = {0};
        DeviceExperts device = new DeviceExperts("layer 0", rank -> new CountingLayer(new ReferenceExpertLayer(E, D, I,
                rank, 1.0, w1.data().asFloat(), w3.data().asFloat(), w2.data().asFloat()), uploads));
        LoraExperts up = lora(D, I, 8, 16, 19);
        FullExperts adapted = new FullExperts(weights, new Nd4jGroupedGemm(), device).withLora(null, up, null);
        INDArray x = input(20);
        Routes routes = routes(x, 21);
        adapted.forward(x, routes);
        adapted.forward(x, routes);
        assertEquals(1, uploads[0], "the same instances: one upload");

        up.b().muli(2);                                                          // an optimizer's in-place update
        LoraExperts next = new LoraExperts(up.a(), up.b(), up.alpha());          // the next step's instance
        ExpertFfn.Pass pass = new FullExperts(weights, new Nd4jGroupedGemm(), device).withLora(null, next, null)
                .forward(x, routes);
        assertEquals(2, uploads[0]);
        FullExperts cpu = new FullExperts(weights, null, next, null, new Nd4jGroupedGemm());
        assertClose(cpu.forward(x, routes).out(), pass.out(), "out after the update");
    }

    /** A CUDA failure (the GPU out of memory) names whose experts and what to change. */
    @Test
    void aGpuFailureNamesTheLayerAndWhatToChange() {
        DeviceExperts device = new DeviceExperts("decoder layer 3", rank -> {
            throw new CudaException("CUDA error 2 (out of memory) in layerCreate");
        });
        FullExperts onDevice = new FullExperts(weights, new Nd4jGroupedGemm(), device);
        INDArray x = input(22);
        CudaException e = assertThrows(CudaException.class, () -> onDevice.forward(x, routes(x, 23)));
        assertTrue(e.getMessage().startsWith("decoder layer 3's experts on the GPU: CUDA error 2 (out of memory)"),
                e.getMessage());
        assertTrue(e.getMessage().contains("--layerwise") && e.getMessage().contains("--batch-windows"),
                e.getMessage());
    }

    /** An expert layer that counts its LoRA uploads. */
    private record CountingLayer(ReferenceExpertLayer inner, int[] uploads) implements ExpertLayer {
        @Override
        public int experts() {
            return inner.experts();
        }

        @Override
        public int hidden() {
            return inner.hidden();
        }

        @Override
        public int intermediate() {
            return inner.intermediate();
        }

        @Override
        public int rank() {
            return inner.rank();
        }

        @Override
        public void setLora(FloatBuffer a1, FloatBuffer b1, FloatBuffer a3,
                            FloatBuffer b3, FloatBuffer a2, FloatBuffer b2) {
            uploads[0]++;
            inner.setLora(a1, b1, a3, b3, a2, b2);
        }

        @Override
        public void forward(Plan plan, FloatBuffer x, FloatBuffer out) {
            inner.forward(plan, x, out);
        }

        @Override
        public void backward(FloatBuffer dOut, FloatBuffer dx, Gradients into) {
            inner.backward(dOut, dx, into);
        }

        @Override
        public void close() {
            inner.close();
        }
    }

    @Test
    void weightsGoToTheLayerAsBf16ViewsOrRoundedCopies() {
        INDArray f = Nd4j.rand(DataType.FLOAT, 3, 8, 16).subi(0.5);
        INDArray bf = f.castTo(DataType.BFLOAT16);
        for (int e = 0; e < 3; e++) {
            ByteBuffer fromBf16 = DeviceExperts.bf16(WeightStack.of(bf), e);
            ByteBuffer fromFloat = DeviceExperts.bf16(WeightStack.of(f), e);
            assertEquals(2 * 8 * 16, fromBf16.capacity());
            assertEquals(2 * 8 * 16, fromFloat.capacity());
            float[] widened = bf.slice(e).castTo(DataType.FLOAT).data().asFloat();
            float[] rounded = f.slice(e).dup('c').data().asFloat();
            for (int k = 0; k < 8 * 16; k++) {
                assertEquals(widened[k], Bf16.toFloat(fromBf16.getShort(2 * k)), 0f, "stored bf16, element " + k);
                assertEquals(Bf16.round(rounded[k]), Bf16.toFloat(fromFloat.getShort(2 * k)), 0f,
                        "float32 rounded, element " + k);
            }
        }
        // the stored bytes are read in place, not copied
        ByteBuffer view = DeviceExperts.bf16(WeightStack.of(bf), 1);
        bf.putScalar(new long[] {1, 0, 0}, 3.0f);
        assertEquals(3.0f, Bf16.toFloat(view.getShort(0)), 0f);
    }

    @Test
    void onlySwigluExpertsWithoutBiasesAndShapesOfEightFit() {
        assertTrue(DeviceExperts.fits(weights));
        ExpertWeights odd = new ExpertWeights(Nd4j.zeros(DataType.FLOAT, 2, 12, 16), Nd4j.zeros(DataType.FLOAT, 2, 12,
                16), Nd4j.zeros(DataType.FLOAT, 2, 16, 12));
        assertFalse(DeviceExperts.fits(odd));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> DeviceExperts.cuda("layer 0", odd, 0));
        assertTrue(e.getMessage().contains("I=12"), e.getMessage());
    }

    private static void assertClose(INDArray expected, INDArray actual, String what) {
        GradientCheck.assertRelativeL2(expected, actual, TOLERANCE, what);
    }
}
