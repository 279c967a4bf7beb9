package org.sparkmoe.adapter;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.apache.hadoop.conf.Configuration;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.io.SafeTensorsFile;
import org.sparkmoe.io.SafeTensorsWriter;
import org.sparkmoe.mumoe.GateActivation;
import org.sparkmoe.mumoe.MumoeForm;

/**
 * The μMoE adapter folder: what {@link MumoeAdapter#write} puts there (config keys, tensor names, shapes and order)
 * reads back bit for bit (flat TR, and hierarchical CP with experts a list of levels), is told from a PEFT adapter,
 * a flat adapter's "experts" stays an integer, and a wrong shape, a missing or an extra tensor, or attention
 * sites on a model without grouped-query attention are one-line errors naming the file and key.
 */
class MumoeAdapterFormatTest {
    private static final Configuration CONF = new Configuration();

    @TempDir
    Path dir;

    private static MumoeConfig tr() {
        return new MumoeConfig(MumoeForm.TR, 6, new int[] {2, 3, 4}, MumoeConfig.parseTargets("moe,v_proj", "test"));
    }

    private static LinkedHashMap<String, INDArray> randomState(ModelConfig model, MumoeConfig config) {
        Nd4j.getRandom().setSeed(3);
        LinkedHashMap<String, INDArray> state = new LinkedHashMap<>();
        config.expectedState(model).forEach((k, shape) -> state.put(k, Nd4j.randn(DataType.FLOAT, shape)));
        return state;
    }

    private org.apache.hadoop.fs.Path hadoop(Path p) {
        return new org.apache.hadoop.fs.Path(p.toUri());
    }

    @Test
    void writeThenReadGivesTheSameConfigAndTensorsInTheDocumentedLayout() throws Exception {
        ModelConfig model = AdapterFixtures.mixtral();
        MumoeConfig config = tr();
        LinkedHashMap<String, INDArray> state = randomState(model, config);
        Path out = dir.resolve("adapter");
        new MumoeAdapter(config, state).write(hadoop(out), CONF, model, "/models/mixtral-tiny");

        String json = Files.readString(out.resolve("adapter_config.json"));
        assertTrue(json.contains("\"adapter_type\" : \"MUMOE\""), json);
        assertTrue(json.contains("\"form\" : \"tr\""), json);
        assertTrue(MumoeAdapter.isMumoe(hadoop(out), CONF));
        try (SafeTensorsFile file = SafeTensorsFile.open(out.resolve("adapter_model.safetensors"))) {
            List<String> names = List.copyOf(file.names());
            assertEquals(4 * 2 * 4, names.size(), "layers × (v_proj, moe) × (gate, three cores)");
            assertTrue(names.contains("model.layers.3.self_attn.v_proj.mumoe.core.expert"), names.toString());
            assertArrayEquals(new long[] {4, 128, 2}, file.info("model.layers.0.block_sparse_moe.mumoe.core.out").shape());
            assertArrayEquals(new long[] {3, 128, 4}, file.info("model.layers.0.self_attn.v_proj.mumoe.core.in").shape());
        }
        MumoeAdapter read = MumoeAdapter.read(hadoop(out), CONF, model);
        assertEquals(config, read.config());
        assertEquals(List.copyOf(state.keySet()), List.copyOf(read.state().keySet()));
        for (Map.Entry<String, INDArray> e : state.entrySet()) {
            assertArrayEquals(e.getValue().data().asFloat(), read.state().get(e.getKey()).data().asFloat(), e.getKey());
        }
    }

    @Test
    void aHierarchicalAdapterWritesItsLevelsAndReadsBackBitForBit() throws Exception {
        ModelConfig model = AdapterFixtures.mixtral();
        MumoeConfig config = new MumoeConfig(MumoeForm.CP, new int[] {3, 4}, new int[] {5},
                MumoeConfig.parseTargets("moe", "test"));
        assertEquals(12, config.expertCount());
        assertEquals("3,4", config.expertsSpelling());
        LinkedHashMap<String, INDArray> state = randomState(model, config);
        String moe = "model.layers.0.block_sparse_moe.mumoe.";
        assertEquals(List.of(moe + "gate.0", moe + "gate.1", moe + "expert.0", moe + "expert.1", moe + "in",
                moe + "out"), List.copyOf(state.keySet()).subList(0, 6));
        assertArrayEquals(new long[] {128, 4}, state.get(moe + "gate.1").shape());
        assertArrayEquals(new long[] {4, 5}, state.get(moe + "expert.1").shape());
        assertEquals(4 * (128 * (3 + 4) + 5 * (3 + 4 + 128 + 128)), config.parameterCount(model));
        Path out = dir.resolve("levels");
        new MumoeAdapter(config, state).write(hadoop(out), CONF, model, null);
        String json = Files.readString(out.resolve("adapter_config.json"));
        assertTrue(json.contains("\"experts\" : [ 3, 4 ]"), json);
        MumoeAdapter read = MumoeAdapter.read(hadoop(out), CONF, model);
        assertEquals(config, read.config());
        for (Map.Entry<String, INDArray> e : state.entrySet()) {
            assertArrayEquals(e.getValue().data().asFloat(), read.state().get(e.getKey()).data().asFloat(), e.getKey());
        }

        MumoeConfig flat = new MumoeConfig(MumoeForm.CP, 6, new int[] {5}, MumoeConfig.parseTargets("moe", "test"));
        String flatJson = flat.toJson(null);
        assertTrue(flatJson.contains("\"experts\" : 6,"), "a flat adapter's experts stay an integer: " + flatJson);
        assertEquals(flat, MumoeConfig.parse(flatJson, "old"));
        assertEquals(flat, MumoeConfig.parse(flatJson.replace("\"experts\" : 6", "\"experts\" : [ 6 ]"), "one level"));
        AdapterFormatException tr = assertThrows(AdapterFormatException.class, () -> MumoeConfig.parse(
                flat.toJson(null).replace("\"experts\" : 6", "\"experts\" : [ 2, 3 ]").replace("\"cp\"", "\"tr\"")
                        .replace("\"ranks\" : [ 5 ]", "\"ranks\" : [ 2, 2, 2 ]"), "cfg"));
        assertEquals("cfg: --mumoe-rank: μMoE tr takes 4 ranks r1,...,r4 for 2 expert levels (one per core of the "
                + "ring) ≥ 1, got [2, 2, 2]", tr.getMessage());
        AdapterFormatException bad = assertThrows(AdapterFormatException.class,
                () -> MumoeConfig.parse(flatJson.replace("\"experts\" : 6", "\"experts\" : [ 2, \"x\" ]"), "cfg"));
        assertTrue(bad.getMessage().startsWith("cfg: experts must be an integer or a list of integers"),
                bad.getMessage());
    }

    /** The gate field: softmax as before, entmax15 round-trips, absent reads as softmax, anything else fails. */
    @Test
    void theGateIsWrittenAndReadBackAndAbsentMeansSoftmax() {
        MumoeConfig softmax = new MumoeConfig(MumoeForm.CP, 6, new int[] {5}, MumoeConfig.parseTargets("moe", "t"));
        String json = softmax.toJson(null);
        assertTrue(json.contains("\"gate\" : \"softmax\""), json);
        assertEquals(softmax, MumoeConfig.parse(json.replace(",\n  \"gate\" : \"softmax\"", ""), "no gate"));
        MumoeConfig entmax = new MumoeConfig(MumoeForm.CP, new int[] {6}, new int[] {5},
                MumoeConfig.parseTargets("moe", "t"), GateActivation.ENTMAX15);
        String sparse = entmax.toJson(null);
        assertEquals(json.replace("\"softmax\"", "\"entmax15\""), sparse);
        assertEquals(entmax, MumoeConfig.parse(sparse, "entmax"));
        assertNotEquals(softmax, entmax);
        AdapterFormatException bad = assertThrows(AdapterFormatException.class,
                () -> MumoeConfig.parse(json.replace("\"softmax\"", "\"sparsemax\""), "cfg"));
        assertEquals("cfg: gate: unknown μMoE gate 'sparsemax', expected softmax or entmax15", bad.getMessage());
    }

    @Test
    void aHierarchicalTrAdapterNamesOneCorePerLevelAndReadsBackBitForBit() throws Exception {
        ModelConfig model = AdapterFixtures.mixtral();
        MumoeConfig config = new MumoeConfig(MumoeForm.TR, new int[] {3, 4}, new int[] {2, 3, 4, 2},
                MumoeConfig.parseTargets("moe", "test"));
        LinkedHashMap<String, INDArray> state = randomState(model, config);
        String moe = "model.layers.0.block_sparse_moe.mumoe.";
        assertEquals(List.of(moe + "gate.0", moe + "gate.1", moe + "core.expert.0", moe + "core.expert.1",
                moe + "core.in", moe + "core.out"), List.copyOf(state.keySet()).subList(0, 6));
        assertArrayEquals(new long[] {2, 3, 3}, state.get(moe + "core.expert.0").shape());
        assertArrayEquals(new long[] {3, 4, 4}, state.get(moe + "core.expert.1").shape());
        assertArrayEquals(new long[] {4, 128, 2}, state.get(moe + "core.in").shape());
        assertArrayEquals(new long[] {2, 128, 2}, state.get(moe + "core.out").shape());
        assertEquals(4 * (128 * (3 + 4) + 2 * 3 * 3 + 3 * 4 * 4 + 4 * 128 * 2 + 2 * 128 * 2),
                config.parameterCount(model));
        Path out = dir.resolve("tr-levels");
        new MumoeAdapter(config, state).write(hadoop(out), CONF, model, null);
        String json = Files.readString(out.resolve("adapter_config.json"));
        assertTrue(json.contains("\"experts\" : [ 3, 4 ]"), json);
        MumoeAdapter read = MumoeAdapter.read(hadoop(out), CONF, model);
        assertEquals(config, read.config());
        assertEquals(List.copyOf(state.keySet()), List.copyOf(read.state().keySet()));
        for (Map.Entry<String, INDArray> e : state.entrySet()) {
            assertArrayEquals(e.getValue().data().asFloat(), read.state().get(e.getKey()).data().asFloat(), e.getKey());
        }
    }

    @Test
    void aPeftAdapterFolderIsNotAMumoeOne() throws Exception {
        Path out = dir.resolve("peft");
        Files.createDirectories(out);
        Files.writeString(out.resolve("adapter_config.json"), "{\"peft_type\": \"LORA\", \"r\": 4}");
        assertFalse(MumoeAdapter.isMumoe(hadoop(out), CONF));
        assertFalse(MumoeAdapter.isMumoe(hadoop(dir.resolve("missing")), CONF));
    }

    @Test
    void badFoldersAreOneLineErrorsNamingTheFileAndKey() throws Exception {
        ModelConfig model = AdapterFixtures.mixtral();
        MumoeConfig config = tr();
        Path out = dir.resolve("bad");
        LinkedHashMap<String, INDArray> state = randomState(model, config);
        new MumoeAdapter(config, state).write(hadoop(out), CONF, model, null);
        Path weights = out.resolve("adapter_model.safetensors");

        String wrong = "model.layers.1.block_sparse_moe.mumoe.gate.0";
        LinkedHashMap<String, INDArray> reshaped = new LinkedHashMap<>(state);
        reshaped.put(wrong, Nd4j.zeros(DataType.FLOAT, 128, 7));
        SafeTensorsWriter.write(org.apache.hadoop.fs.FileSystem.getLocal(CONF), hadoop(weights), reshaped, Map.of());
        AdapterFormatException shape = assertThrows(AdapterFormatException.class,
                () -> MumoeAdapter.read(hadoop(out), CONF, model));
        assertEquals(hadoop(weights) + ": " + wrong + " has shape [128, 7], expected [128, 6]", shape.getMessage());

        LinkedHashMap<String, INDArray> extra = new LinkedHashMap<>(state);
        extra.put("model.layers.0.self_attn.q_proj.mumoe.gate.0", Nd4j.zeros(DataType.FLOAT, 128, 6));
        SafeTensorsWriter.write(org.apache.hadoop.fs.FileSystem.getLocal(CONF), hadoop(weights), extra, Map.of());
        AdapterFormatException unexpected = assertThrows(AdapterFormatException.class,
                () -> MumoeAdapter.read(hadoop(out), CONF, model));
        assertTrue(unexpected.getMessage().startsWith(hadoop(weights) + ": unexpected tensor "
                + "model.layers.0.self_attn.q_proj.mumoe.gate.0"), unexpected.getMessage());

        LinkedHashMap<String, INDArray> missing = new LinkedHashMap<>(state);
        missing.remove(wrong);
        SafeTensorsWriter.write(org.apache.hadoop.fs.FileSystem.getLocal(CONF), hadoop(weights), missing, Map.of());
        AdapterFormatException none = assertThrows(AdapterFormatException.class,
                () -> MumoeAdapter.read(hadoop(out), CONF, model));
        assertTrue(none.getMessage().startsWith(hadoop(weights) + ": no tensor " + wrong), none.getMessage());

        Files.writeString(out.resolve("adapter_config.json"), Files.readString(out.resolve("adapter_config.json"))
                .replace("\"form\" : \"tr\"", "\"form\" : \"tucker\""));
        AdapterFormatException form = assertThrows(AdapterFormatException.class,
                () -> MumoeAdapter.read(hadoop(out), CONF, model));
        assertTrue(form.getMessage().contains("unknown μMoE form 'tucker', expected cp or tr"), form.getMessage());
    }
}
