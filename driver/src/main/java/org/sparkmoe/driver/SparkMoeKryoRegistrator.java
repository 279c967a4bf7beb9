package org.sparkmoe.driver;

import com.esotericsoftware.kryo.Kryo;
import com.esotericsoftware.kryo.serializers.JavaSerializer;
import org.apache.spark.serializer.KryoRegistrator;
import org.nd4j.kryo.Nd4jRegistrator;
import org.sparkmoe.calib.CalibrationStats;
import org.sparkmoe.calib.DivergenceStats;
import org.sparkmoe.calib.ExactSums;
import org.sparkmoe.calib.ExpertActivationStats;
import org.sparkmoe.calib.ExpertSaliencyStats;
import org.sparkmoe.calib.ImportanceSums;
import org.sparkmoe.calib.SquareSums;
import org.sparkmoe.calib.LayerRouterStats;
import org.sparkmoe.calib.MumoeGateStats;
import org.sparkmoe.driver.calib.CalibChunk;
import org.sparkmoe.driver.data.TokenizedFile;
import org.sparkmoe.driver.eval.ChunkDivergence;
import org.sparkmoe.driver.eval.ChunkNll;
import org.sparkmoe.driver.layerwise.AttendedChunk;
import org.sparkmoe.driver.layerwise.GroupRows;
import org.sparkmoe.driver.layerwise.HiddenChunk;
import org.sparkmoe.driver.eval.TokenChunk;
import org.sparkmoe.driver.train.TrainJob;

/** Registers every class SparkMoE sends through Spark (spark.kryo.registrationRequired=true). */
public final class SparkMoeKryoRegistrator implements KryoRegistrator {
    /**
     * What DL4J's ParameterAveragingTrainingMaster broadcasts and aggregates. They hold whole network
     * configurations (deep object graphs of DL4J classes), so they travel by their own Java serialization
     * inside Kryo rather than registering every class of those graphs.
     */
    private static final Class<?>[] DL4J_TRAINING = {
            org.deeplearning4j.spark.api.worker.NetBroadcastTuple.class,
            org.deeplearning4j.spark.impl.paramavg.ParameterAveragingTrainingResult.class,
            org.deeplearning4j.spark.impl.paramavg.aggregator.ParameterAveragingAggregationTuple.class,
            org.deeplearning4j.spark.impl.paramavg.ParameterAveragingTrainingWorker.class,
            org.deeplearning4j.spark.api.stats.SparkTrainingStats.class,
            org.nd4j.linalg.dataset.DataSet.class,
            org.datavec.spark.util.SerializableHadoopConfig.class,
    };

    private static void registerDl4jTraining(Kryo kryo) {
        for (Class<?> type : DL4J_TRAINING) {
            kryo.register(type, new JavaSerializer());
        }
    }

    @Override
    public void registerClasses(Kryo kryo) {
        new Nd4jRegistrator().registerClasses(kryo);
        kryo.register(int[].class);
        kryo.register(int[][].class);
        kryo.register(double[].class);
        kryo.register(TokenizedFile.class);
        kryo.register(TokenChunk.class);
        kryo.register(HiddenChunk.class);
        kryo.register(AttendedChunk.class);
        kryo.register(GroupRows.class);
        kryo.register(GroupRows[].class);
        kryo.register(ChunkNll.class);
        kryo.register(ChunkNll[].class);
        kryo.register(ChunkDivergence.class);
        kryo.register(ChunkDivergence[].class);
        kryo.register(DivergenceStats.class);
        kryo.register(boolean[].class);
        TrainJob.registerClasses(kryo);
        kryo.register(float[].class);
        kryo.register(CalibChunk.class);
        kryo.register(CalibrationStats.class);
        kryo.register(LayerRouterStats.class);
        kryo.register(LayerRouterStats[].class);
        kryo.register(LayerRouterStats[][].class);
        kryo.register(ExpertActivationStats.class);
        kryo.register(ExpertActivationStats[].class);
        kryo.register(ExpertSaliencyStats.class);
        kryo.register(ExpertSaliencyStats[].class);
        kryo.register(ExactSums.class);
        kryo.register(ExactSums[].class);
        kryo.register(ExactSums[][].class);
        kryo.register(MumoeGateStats.class);
        kryo.register(long[][].class);
        kryo.register(ImportanceSums.class);
        kryo.register(SquareSums.class);
        kryo.register(SquareSums[].class);
        kryo.register(SquareSums[][].class);
        org.sparkmoe.driver.surgery.SurgeryPiece.registerClasses(kryo);
        registerDl4jTraining(kryo);
    }
}
