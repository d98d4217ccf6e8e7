/*
 * Stacked Cross Attention for one image-caption pair (Lee et al., ECCV 2018,
 * section 3), in float64: the equations of scan_keras/layers/equations.py,
 * which the layer computes for all pairs at once, written for one pair.
 *
 *   s[r][w] = v_r . e_w                     region-word similarities
 *   Eq. 1 / 5  for each key, its similarities with every query normalised
 *              (raw_feature_norm; clipped l2 norm in the paper)
 *   Eq. 2 / 6  alpha = softmax over the keys of lambda_1 times those
 *   Eq. 3 / 7  R = cos(query, attended vector), from sum_k alpha_k s_k and
 *              alpha^T G alpha (G: the Gram matrix of the keys), so no
 *              attended vector is built, as in the layer
 *   Eq. 4 / 8  the relevances pooled: AVG (mean), LSE, max or sum
 *
 * t2i: the words are the queries and the regions the keys; i2t: the
 * reverse. The page and its tests call these functions; nothing else in
 * the page computes attention.
 */
"use strict";

const SCANAttention = (() => {
  // The reference code's clipping [s]_+ is a leaky ReLU of this slope
  // (layers/norms.py LEAKY_SLOPE): a hard one would zero its gradients.
  const LEAKY_SLOPE = 0.1;
  // The floor under a squared norm before its root (norms.SQUARE_FLOOR).
  const SQUARE_FLOOR = 1e-30;

  function dot(a, b) {
    let total = 0;
    for (let k = 0; k < a.length; k++) total += a[k] * b[k];
    return total;
  }

  /** Every row of `a` against every row of `b`: an (A, B) array of arrays. */
  function products(a, b) {
    return a.map((x) => b.map((y) => dot(x, y)));
  }

  function norm(x) {
    return Math.sqrt(Math.max(dot(x, x), SQUARE_FLOOR));
  }

  function sum(values) {
    return values.reduce((total, v) => total + v, 0);
  }

  /** Softmax with the shift by the maximum (norms.masked_softmax). */
  function softmax(x) {
    const top = Math.max(...x);
    const e = x.map((v) => Math.exp(v - top));
    const total = Math.max(sum(e), 1e-30);
    return e.map((v) => v / total);
  }

  /**
   * What the attention of a pair needs that no option changes.
   * regions: R vectors of d numbers; words: W vectors (the caption's real
   * tokens). regionGram: the image's G = V V^T, when already computed.
   * Returns {s (R, W), regionGram (R, R), wordGram (W, W), regionNorms,
   * wordNorms}.
   */
  function prepare(regions, words, regionGram) {
    return {
      s: products(regions, words),
      regionGram: regionGram || products(regions, regions),
      wordGram: products(words, words),
      regionNorms: regions.map(norm),
      wordNorms: words.map(norm),
    };
  }

  /** Eq. 1 / 5: the similarities of one key with all the queries. */
  function normalise(values, kind, eps) {
    let x = values;
    if (kind.startsWith("clipped")) x = x.map((v) => (v >= 0 ? v : LEAKY_SLOPE * v));
    if (kind.endsWith("l2norm")) {
      const n = norm(x);
      return x.map((v) => v / (n + eps));
    }
    if (kind.endsWith("l1norm")) {
      const n = sum(x.map(Math.abs));
      return x.map((v) => v / (n + eps));
    }
    if (kind === "softmax") return softmax(x);
    return x.slice(); // "clipped" and "no_norm": nothing along the axis
  }

  /**
   * Eq. 4 / 8: the pooled score of relevances R, for each pooling.
   * Returns {mean, logsumexp, max, sum}.
   */
  function pool(relevance, lambdaLse) {
    const x = relevance.map((r) => lambdaLse * r);
    const top = Math.max(...x);
    const lse = (Math.log(sum(x.map((v) => Math.exp(v - top)))) + top) / lambdaLse;
    return {
      mean: sum(relevance) / relevance.length,
      logsumexp: lse,
      max: Math.max(...relevance),
      sum: sum(relevance),
    };
  }

  /**
   * The attention of a prepared pair under `options` ({cross_attn,
   * lambda_softmax, agg_func, lambda_lse, raw_feature_norm, eps}, as the
   * layer's get_config names them).
   * Returns {attention, relevance, scores, score}: attention (W, R) for
   * t2i (each word's weights over the regions) and (R, W) for i2t, as the
   * layer's return_attention_scores; relevance per query; scores for
   * every pooling; score with the model's agg_func.
   */
  function attend(pair, options) {
    const t2i = options.cross_attn === "t2i";
    const nRegions = pair.s.length;
    const nWords = nRegions ? pair.s[0].length : 0;
    const [nQueries, nKeys] = t2i ? [nWords, nRegions] : [nRegions, nWords];
    const similarity = t2i ? (q, k) => pair.s[k][q] : (q, k) => pair.s[q][k];
    const gram = t2i ? pair.regionGram : pair.wordGram;
    const queryNorms = t2i ? pair.wordNorms : pair.regionNorms;
    const eps = options.eps;
    // Eq. 1 / 5: t2i normalises each region's similarities across the
    // words, i2t each word's across the regions.
    const normalised = [];
    for (let k = 0; k < nKeys; k++) {
      const column = [];
      for (let q = 0; q < nQueries; q++) column.push(similarity(q, k));
      normalised.push(normalise(column, options.raw_feature_norm, eps));
    }
    const attention = [];
    const relevance = [];
    for (let q = 0; q < nQueries; q++) {
      const logits = [];
      for (let k = 0; k < nKeys; k++) logits.push(options.lambda_softmax * normalised[k][q]);
      const alpha = softmax(logits); // Eq. 2 / 6
      // Eq. 3 / 7: query . attended = sum alpha s; |attended|^2 = alpha^T G alpha.
      let along = 0;
      let quad = 0;
      for (let k = 0; k < nKeys; k++) {
        along += alpha[k] * similarity(q, k);
        quad += alpha[k] * dot(gram[k], alpha);
      }
      const length = queryNorms[q] * Math.sqrt(Math.max(quad, SQUARE_FLOOR));
      relevance.push(along / Math.max(length, eps));
      attention.push(alpha);
    }
    const scores = pool(relevance, options.lambda_lse);
    return { attention, relevance, scores, score: scores[options.agg_func] };
  }

  return { prepare, attend, normalise, softmax, pool, products };
})();
