package org.sparkmoe.driver.router;

import org.sparkmoe.calib.ExpertMap;
import org.sparkmoe.driver.calib.RouterDataInfo;

import java.io.Serializable;

/**
 * What a router retraining run does, resolved and validated on the driver.
 *
 * @param routerData         URI of the calibrate export (router-data.json and layer-N folders)
 * @param info               its router-data.json
 * @param expertMap          groups per MoE layer (the identity map when none was given)
 * @param epochs             passes over each layer's files
 * @param averagingFrequency minibatches each worker fits between parameter averagings
 * @param learningRate       Adam's learning rate
 * @param seed               root seed (network initialisation and DL4J's data splits derive from it)
 * @param workers            DL4J workers (parallel minibatch streams between averagings)
 * @param sigmoid            a sigmoid router (GLM-4.5): sigmoid output and binary cross-entropy per expert to the
 *                           teacher's sigmoid scores, in place of softmax and cross-entropy to its distribution
 * @param bias               a router with a logit bias (gpt-oss's {@code mlp.router.bias}): fitted with the weight
 */
public record RetrainPlan(String routerData, RouterDataInfo info, ExpertMap expertMap, int epochs,
                          int averagingFrequency, double learningRate, long seed, int workers, boolean sigmoid,
                          boolean bias)
        implements Serializable {
}
