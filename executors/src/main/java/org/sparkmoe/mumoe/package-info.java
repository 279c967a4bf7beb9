/**
 * Multilinear Mixture of Experts (μMoE; Oldfield et al., NeurIPS 2024, arXiv 2402.12550): a layer
 * y = Σₙ aₙ(x)·Wₙᵀx over N soft-gated experts whose weight tensor W [N, I, O] is kept factorised (CP or tensor
 * ring) and never materialised. {@link org.sparkmoe.mumoe.CpMumoe} and {@link org.sparkmoe.mumoe.TrMumoe} are the
 * fast, batched ND4J implementations; {@link org.sparkmoe.mumoe.CpMumoeNaive} and
 * {@link org.sparkmoe.mumoe.TrMumoeNaive} build W explicitly (small sizes only) and are their references.
 *
 * <p>Letters: T tokens, I input size, O output size, N experts (N_l per level of a hierarchy), R CP rank,
 * r1, r2, r3 tensor-ring ranks (r1, ..., r_{L+2} for a ring with L expert cores, one per level).
 */
package org.sparkmoe.mumoe;
