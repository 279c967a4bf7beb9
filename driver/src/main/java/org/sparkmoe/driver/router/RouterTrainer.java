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
import org.nd4j.linalg.api.buffer.DataType;
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
 * Fits one MoE layer's router with DL4J Spark: a single linear layer (D → E', with a bias where the router has one:
 * gpt-oss), softmax, and cross-entropy to the (possibly grouped) teacher distribution (MCXENT with soft labels) —
 * gpt-oss's rule (top-k on the logits, softmax over those k) is that softmax renormalised over its top k, so the same
 * target fits it, bias included (both are defined up to one constant added to every logit); for a sigmoid router,
 * sigmoid and binary cross-entropy per expert to the teacher's sigmoid scores (XENT), since a sigmoid router's logits
 * are fixed, not only up to a per-token shift — trained by {@link SparkDl4jMultiLayer} with a
 * {@link ParameterAveragingTrainingMaster} on the exported DataSet files.
 */
final class RouterTrainer {
    /**
     * The new gate [E', D], its logit bias [E'] (null without one), the averaged minibatch score after each epoch,
     * and the top-k agreement with the teacher.
     */
    record Result(INDArray gate, INDArray bias, double[] epochScores, long agreeing, long tokens, int k) {
        double score() {
            return epochScores[epochScores.length - 1];
        }

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
        MultiLayerConfiguration conf = network(plan.info().hiddenSize(), groups, plan.sigmoid(), plan.bias(),
                plan.learningRate(), seeds.nextLong(), DataType.FLOAT);
        int examples = plan.info().examplesPerFile();
        ParameterAveragingTrainingMaster master = new ParameterAveragingTrainingMaster.Builder(plan.workers(), examples)
                .batchSizePerWorker(examples)
                .averagingFrequency(plan.averagingFrequency())
                .rngSeed(seeds.nextLong())
                .build();
        SparkDl4jMultiLayer net = new SparkDl4jMultiLayer(sc, conf, master);
        double[] scores = new double[plan.epochs()];
        for (int epoch = 1; epoch <= plan.epochs(); epoch++) {
            sc.setJobDescription("retrain-router: layer " + decoderLayer + ", epoch " + epoch + "/" + plan.epochs()
                    + " over " + files + " files");
            net.fitPaths(paths, loader);
            scores[epoch - 1] = net.getScore();
            System.err.printf("retrain-router: layer %d epoch %d/%d score %.6f%n", decoderLayer, epoch, plan.epochs(),
                    net.getScore());
        }
        INDArray gate = net.getNetwork().getLayer(0).getParam("W").transpose().dup('c'); // [E', D]
        INDArray bias = plan.bias() ? net.getNetwork().getLayer(0).getParam("b").reshape(groups).dup() : null; // [E']
        int k = Math.min(plan.info().topK(), groups);
        sc.setJobDescription("retrain-router: layer " + decoderLayer + ", top-" + k + " agreement");
        long[] counts = agreement(sc, paths, loader, gate, bias, k);
        return new Result(gate, bias, scores, counts[0], counts[1], k);
    }

    /**
     * The router as a DL4J network: one output layer D → E', softmax and cross-entropy to soft labels (MCXENT), or
     * for a sigmoid router sigmoid and binary cross-entropy (XENT); with a bias only where the router has one
     * (gpt-oss), Xavier initialisation (a bias starts at 0), Adam.
     */
    static MultiLayerConfiguration network(int hidden, int outputs, boolean sigmoid, boolean bias, double learningRate,
                                           long seed, DataType dataType) {
        return new NeuralNetConfiguration.Builder()
                .seed(seed)
                .dataType(dataType)
                .updater(new Adam(learningRate))
                .list()
                .layer(new OutputLayer.Builder(sigmoid ? LossFunctions.LossFunction.XENT
                        : LossFunctions.LossFunction.MCXENT)
                        .nIn(hidden).nOut(outputs).hasBias(bias)
                        .activation(sigmoid ? Activation.SIGMOID : Activation.SOFTMAX)
                        .weightInit(WeightInit.XAVIER).build())
                .build();
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
                                    INDArray gate, INDArray bias, int k) {
        // copies: destroying a broadcast closes the (AutoCloseable) INDArray held in the driver's block store
        Broadcast<INDArray> weights = sc.broadcast(gate.dup());
        Broadcast<INDArray> biases = bias == null ? null : sc.broadcast(bias.dup());
        try {
            List<long[]> parts = paths.map(path -> {
                DataSet data = loader.load(new HadoopSource(path));
                INDArray logits = data.getFeatures().mmul(weights.value().transpose());       // [N, E']
                if (biases != null) {
                    logits.addiRowVector(biases.value());                                     // + b [E']
                }
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
            if (biases != null) {
                biases.destroy();
            }
        }
    }
}
