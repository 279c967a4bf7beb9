package org.sparkmoe.driver;

import com.esotericsoftware.kryo.Kryo;
import org.apache.spark.serializer.KryoRegistrator;
import org.nd4j.kryo.Nd4jRegistrator;
import org.sparkmoe.driver.data.TokenizedFile;
import org.sparkmoe.driver.eval.ChunkNll;
import org.sparkmoe.driver.eval.TokenChunk;
import org.sparkmoe.driver.train.TrainJob;

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
        TrainJob.registerClasses(kryo);
    }
}
