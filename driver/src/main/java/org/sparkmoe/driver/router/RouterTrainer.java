package org.sparkmoe.driver.router;

import org.apache.hadoop.fs.Path;
import org.apache.spark.api.java.JavaRDD;
import org.apache.spark.api.java.JavaSparkContext;
import org.apache.spark.broadcast.Broadcast;
import org.deeplearning4j.nn.conf.MultiLayerConfiguration;
import org.deeplearning4j.nn.conf.NeuralNetConfiguration;
import org.deeplearning4j.nn.conf.layers.OutputLayer;
import org.deeplearning4j.nn.weights.WeightInit;
import org.deeplearning4j.spark.impl.multilayer.SparkDl4jMultiLayer;
import org.deeplearning4j.spark.impl.paramavg.ParameterAveragingTrainingMaster;
import org.deeplearning4j.spark.util.SparkUtils;
import org.nd4j.linalg.activations.Activation;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.dataset.DataSet;
import org.nd4j.linalg.learning.config.Adam;
import org.nd4j.linalg.lossfunctions.LossFunctions;
import org.sparkmoe.calib.RouterDataFiles;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.util.List;
import java.util.Random;

/**
 * Fits one MoE layer's router with DL4J Spark: a single linear layer without bias (D → E'), softmax, and
 * cross-entropy to the (possibly grouped) teacher distribution (MCXENT with soft labels) — for a sigmoid router,
 * sigmoid and binary cross-entropy per expert to the teacher's sigmoid scores (XENT), since a sigmoid router's logits
 * are fixed, not only up to a per-token shift — trained by {@link SparkDl4jMultiLayer} with a
 * {@link ParameterAveragingTrainingMaster} on the exported DataSet files.
 */
final class RouterTrainer {
    /** The new gate [E', D], the last averaged minibatch score, and the top-k agreement with the teacher. */
    record Result(INDArray gate, double score, long agreeing, long tokens, int k) {
        double agreement() {
            return (double) agreeing / tokens;
        }
    }

    private RouterTrainer() {
    }

    static Result train(JavaSparkContext sc, RetrainPlan plan, int moeLayer, long layerSeed) {
        int decoderLayer = plan.info().layers()[moeLayer];
        String dir = RouterDataFiles.layerDir(new Path(plan.routerData()), decoderLayer).toString();
        JavaRDD<String> paths;
        try {
            paths = SparkUtils.listPaths(sc, dir);
        } catch (IOException e) {
            throw new UncheckedIOException("listing " + dir + ": " + e.getMessage(), e);
        }
        long files = paths.count();
        if (files == 0) {
            throw new IllegalArgumentException(dir + " holds no router DataSet files");
        }
        int groups = plan.expertMap().groups(moeLayer);
        float[][] membership = groups == plan.info().experts()
                && isIdentity(plan, moeLayer) ? null : plan.expertMap().membership(moeLayer, plan.info().experts());
        GroupedLabelsLoader loader = new GroupedLabelsLoader(membership);
        Random seeds = new Random(layerSeed);
        MultiLayerConfiguration conf = new NeuralNetConfiguration.Builder()
                .seed(seeds.nextLong())
                .updater(new Adam(plan.learningRate()))
                .list()
                .layer(new OutputLayer.Builder(plan.sigmoid() ? LossFunctions.LossFunction.XENT
                        : LossFunctions.LossFunction.MCXENT)
                        .nIn(plan.info().hiddenSize()).nOut(groups).hasBias(false)
                        .activation(plan.sigmoid() ? Activation.SIGMOID : Activation.SOFTMAX)
                        .weightInit(WeightInit.XAVIER).build())
                .build();
        int examples = plan.info().examplesPerFile();
        ParameterAveragingTrainingMaster master = new ParameterAveragingTrainingMaster.Builder(plan.workers(), examples)
                .batchSizePerWorker(examples)
                .averagingFrequency(plan.averagingFrequency())
                .rngSeed(seeds.nextLong())
                .build();
        SparkDl4jMultiLayer net = new SparkDl4jMultiLayer(sc, conf, master);
        for (int epoch = 1; epoch <= plan.epochs(); epoch++) {
            sc.setJobDescription("retrain-router: layer " + decoderLayer + ", epoch " + epoch + "/" + plan.epochs()
                    + " over " + files + " files");
            net.fitPaths(paths, loader);
            System.err.printf("retrain-router: layer %d epoch %d/%d score %.6f%n", decoderLayer, epoch, plan.epochs(),
                    net.getScore());
        }
        INDArray gate = net.getNetwork().getLayer(0).getParam("W").transpose().dup('c'); // [E', D]
        int k = Math.min(plan.info().topK(), groups);
        sc.setJobDescription("retrain-router: layer " + decoderLayer + ", top-" + k + " agreement");
        long[] counts = agreement(sc, paths, loader, gate, k);
        return new Result(gate, net.getScore(), counts[0], counts[1], k);
    }

    private static boolean isIdentity(RetrainPlan plan, int moeLayer) {
        for (int g = 0; g < plan.expertMap().groups(moeLayer); g++) {
            int[] members = plan.expertMap().members(moeLayer, g);
            if (members.length != 1 || members[0] != g) {
                return false;
            }
        }
        return true;
    }

    /** {agreeing tokens, tokens} over every file, counted on the executors. */
    private static long[] agreement(JavaSparkContext sc, JavaRDD<String> paths, GroupedLabelsLoader loader,
                                    INDArray gate, int k) {
        // a copy: destroying a broadcast closes the (AutoCloseable) INDArray held in the driver's block store
        Broadcast<INDArray> weights = sc.broadcast(gate.dup());
        try {
            List<long[]> parts = paths.map(path -> {
                DataSet data = loader.load(new HadoopSource(path));
                INDArray logits = data.getFeatures().mmul(weights.value().transpose());       // [N, E']
                return new long[] {RouterAgreement.agreeing(data.getLabels(), logits, k), data.getLabels().size(0)};
            }).collect();
            long[] total = new long[2];
            for (long[] p : parts) {
                total[0] += p[0];
                total[1] += p[1];
            }
            return total;
        } finally {
            weights.destroy();
        }
    }
}
