package org.sparkmoe.kernels;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.net.URISyntaxException;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.sparkmoe.io.DType;
import org.sparkmoe.io.Fp8BlockMatrix;
import org.sparkmoe.io.SafeTensorsFile;

/**
 * FP8 e4m3 block-quantized weights against torch: src/test/resources/fp8/fp8-blocks.safetensors was written by
 * make_fp8_reference.py next to it (torch's float8_e4m3fn codes of random weights, quantized per block with scale
 * amax/448, and their dequantization codes·scale in float32 — DeepSeek's weight_dequant). Case a is [40, 20] in
 * blocks of 16×8 (partial last blocks both ways), case b [160, 32] in DeepSeek-V3's 128×128 (a partial second row
 * block and a 32-of-128 column block). Dequantization must be bit-exact, and grouped products with the FP8 matrices
 * (dequantized tile by tile) bit-identical to the same products with the dequantized float32 weights.
 */
class Fp8ProductsTest {

    private static SafeTensorsFile fixture() {
        try {
            return SafeTensorsFile.open(Path.of(Fp8ProductsTest.class.getResource("/fp8/fp8-blocks.safetensors")
                    .toURI()));
        } catch (URISyntaxException e) {
            throw new IllegalStateException(e);
        }
    }

    private static Fp8BlockMatrix matrix(SafeTensorsFile f, String name, int bo, int bi) {
        return new Fp8BlockMatrix(f.stored(name + ".weight"), f.readFloat(name + ".weight_scale_inv"), bo, bi);
    }

    @Test
    void everyCodeDecodesAsTorch() {
        try (SafeTensorsFile f = fixture()) {
            assertEquals(DType.F8_E4M3, f.info("all.codes").dtype());
            byte[] codes = new byte[256];
            f.stored("all.codes").data().asNio().get(0, codes);
            float[] values = f.readFloat("all.values").data().asFloat();
            for (int b = 0; b < 256; b++) {
                assertEquals(values[b], Fp8BlockMatrix.decode(codes[b]), 0f, "code 0x" + Integer.toHexString(b));
            }
            assertTrue(Float.isNaN(Fp8BlockMatrix.decode((byte) 0x7F)));
            assertEquals(448f, Fp8BlockMatrix.decode((byte) 0x7E), 0f);
            assertEquals(0x1p-9f, Fp8BlockMatrix.decode((byte) 0x01), 0f, "smallest subnormal");
        }
    }

    @Test
    void dequantizationIsBitExact() {
        try (SafeTensorsFile f = fixture()) {
            assertArrayEquals(f.readFloat("a.dequantized").data().asFloat(),
                    matrix(f, "a", 16, 8).dequantize().data().asFloat(), "a: 16×8 blocks");
            assertArrayEquals(f.readFloat("b.dequantized").data().asFloat(),
                    matrix(f, "b", 128, 128).dequantize().data().asFloat(), "b: 128×128 blocks");
            INDArray tile = Nd4j.createUninitialized(DataType.FLOAT, 7, 5);
            matrix(f, "a", 16, 8).dequantize(13, 20, 6, 11, tile);   // crosses a row and a column block boundary
            assertArrayEquals(f.readFloat("a.dequantized").get(org.nd4j.linalg.indexing.NDArrayIndex.interval(13, 20),
                    org.nd4j.linalg.indexing.NDArrayIndex.interval(6, 11)).dup('c').data().asFloat(),
                    tile.data().asFloat(), "a: rows 13..19, columns 6..10");
        }
    }

    @Test
    void groupedProductsEqualTheDequantizedWeights() {
        try (SafeTensorsFile f = fixture()) {
            for (GroupedGemm gemm : new GroupedGemm[] {new Nd4jGroupedGemm(), new LoopGroupedGemm()}) {
                for (String name : new String[] {"a", "b"}) {
                    int block = name.equals("a") ? 0 : 1;
                    Fp8BlockMatrix fp8 = block == 0 ? matrix(f, "a", 16, 8) : matrix(f, "b", 128, 128);
                    INDArray wide = f.readFloat(name + ".dequantized");
                    int[] offsets = {0, 3, 3, 7};
                    WeightStack stored = WeightStack.of(List.of(fp8, fp8, fp8));
                    WeightStack widened = WeightStack.of(List.of(wide, wide, wide));
                    Nd4j.getRandom().setSeed(5);
                    INDArray x = Nd4j.randn(DataType.FLOAT, 7, fp8.size(1));
                    INDArray dy = Nd4j.randn(DataType.FLOAT, 7, fp8.size(0));
                    INDArray y8 = Nd4j.zeros(DataType.FLOAT, 7, fp8.size(0));
                    INDArray y32 = Nd4j.zeros(DataType.FLOAT, 7, fp8.size(0));
                    gemm.forward(x, stored, offsets, y8);
                    gemm.forward(x, widened, offsets, y32);
                    assertArrayEquals(y32.data().asFloat(), y8.data().asFloat(), gemm + " forward " + name);
                    INDArray dx8 = Nd4j.zeros(DataType.FLOAT, 7, fp8.size(1));
                    INDArray dx32 = Nd4j.zeros(DataType.FLOAT, 7, fp8.size(1));
                    gemm.backwardInput(dy, stored, offsets, dx8, false);
                    gemm.backwardInput(dy, widened, offsets, dx32, false);
                    assertArrayEquals(dx32.data().asFloat(), dx8.data().asFloat(), gemm + " backward " + name);
                }
            }
            assertArrayEquals(f.readFloat("b.dequantized").data().asFloat(),
                    Dense.linear(Nd4j.eye(32).castTo(DataType.FLOAT), matrix(f, "b", 128, 128)).transpose().dup('c')
                            .data().asFloat(), "Dense.linear with the identity reads the dequantized weight back");
        }
    }

    @Test
    void scalesOfTheWrongGridAreRefused() {
        try (SafeTensorsFile f = fixture()) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> matrix(f, "a", 16, 16));
            assertTrue(e.getMessage().contains("weight_scale_inv must be [3, 2]"), e.getMessage());
        }
    }
}
