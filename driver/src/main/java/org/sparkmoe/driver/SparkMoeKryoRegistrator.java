package org.sparkmoe.driver;

import com.esotericsoftware.kryo.Kryo;
import org.apache.spark.serializer.KryoRegistrator;
import org.nd4j.kryo.Nd4jRegistrator;
import org.sparkmoe.calib.CalibrationStats;
import org.sparkmoe.calib.ExactSums;
import org.sparkmoe.calib.ExpertActivationStats;
import org.sparkmoe.calib.LayerRouterStats;
import org.sparkmoe.driver.calib.CalibChunk;
import org.sparkmoe.driver.eval.ChunkNll;
import org.sparkmoe.driver.eval.TokenChunk;
import org.sparkmoe.driver.eval.TokenizedFile;

/** Registers every class SparkMoE sends through Spark (spark.kryo.registrationRequired=true). */
public final class SparkMoeKryoRegistrator implements KryoRegistrator {
    @Override
    public void registerClasses(Kryo kryo) {
        new Nd4jRegistrator().registerClasses(kryo);
        kryo.register(int[].class);
        kryo.register(int[][].class);
        kryo.register(double[].class);
        kryo.register(TokenizedFile.class);
        kryo.register(TokenChunk.class);
        kryo.register(ChunkNll.class);
        kryo.register(ChunkNll[].class);
        kryo.register(long[].class);
        kryo.register(float[].class);
        kryo.register(CalibChunk.class);
        kryo.register(CalibrationStats.class);
        kryo.register(LayerRouterStats.class);
        kryo.register(LayerRouterStats[].class);
        kryo.register(LayerRouterStats[][].class);
        kryo.register(ExpertActivationStats.class);
        kryo.register(ExpertActivationStats[].class);
        kryo.register(ExactSums.class);
    }
}
