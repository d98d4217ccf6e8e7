"""Slow, literal float64 NumPy reference for SCAN (Lee et al., ECCV 2018).

Written per (image, caption) pair with explicit loops and explicit attended
vectors, to check a fast vectorised implementation against. Clarity over speed.
"""
import numpy as np

RAW_NORMS = ("clipped_l2norm", "l2norm", "l1norm", "clipped_l1norm",
             "softmax", "clipped", "no_norm")
AGG_FUNCS = ("mean", "sum", "max", "logsumexp")
CROSS_ATTNS = ("t2i", "i2t")


def l2norm(x, axis, eps=1e-8):
    """x / (||x||_2 + eps) along `axis`."""
    x = np.asarray(x, dtype=np.float64)
    return x / (np.sqrt(np.sum(x * x, axis=axis, keepdims=True)) + eps)


def l1norm(x, axis, eps=1e-8):
    """x / (sum |x| + eps) along `axis`."""
    x = np.asarray(x, dtype=np.float64)
    return x / (np.sum(np.abs(x), axis=axis, keepdims=True) + eps)


def leaky_relu(x, slope=0.1):
    """[x]_+ with leak: x if x > 0 else slope * x (the paper's clipping)."""
    x = np.asarray(x, dtype=np.float64)
    return np.where(x > 0, x, slope * x)


def cosine(x, y, eps=1e-8):
    """Eq. (3)/(7): cos(x, y) = x.y / max(||x|| ||y||, eps) for 1-D vectors."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    return float(np.dot(x, y) / max(np.linalg.norm(x) * np.linalg.norm(y), eps))


def _softmax(x, axis):
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def raw_feature_norm(s, axis, kind, eps=1e-8):
    """Normalise raw similarities s along `axis` (Eq. (1)/(5) and variants). kind in:
    'clipped_l2norm' = leaky_relu(0.1) then l2norm; 'l2norm'; 'l1norm'; 'clipped_l1norm' = leaky_relu then l1norm;
    'softmax' = softmax along axis; 'clipped' = leaky_relu only; 'no_norm' = identity."""
    s = np.asarray(s, dtype=np.float64)
    if kind == "clipped_l2norm":
        return l2norm(leaky_relu(s, 0.1), axis, eps)
    if kind == "l2norm":
        return l2norm(s, axis, eps)
    if kind == "l1norm":
        return l1norm(s, axis, eps)
    if kind == "clipped_l1norm":
        return l1norm(leaky_relu(s, 0.1), axis, eps)
    if kind == "softmax":
        return _softmax(s, axis)
    if kind == "clipped":
        return leaky_relu(s, 0.1)
    if kind == "no_norm":
        return s.copy()
    raise ValueError(f"unknown raw_norm {kind!r}; expected one of {RAW_NORMS}")


def _pool(rel, agg_func, lambda_lse):
    """Eq. (4)/(8): pool relevances R by mean / sum / max / LogSumExp(lambda_lse)."""
    rel = np.asarray(rel, dtype=np.float64)
    if agg_func == "mean":
        return float(np.mean(rel))
    if agg_func == "sum":
        return float(np.sum(rel))
    if agg_func == "max":
        return float(np.max(rel))
    if agg_func == "logsumexp":
        z = lambda_lse * rel
        m = np.max(z)
        return float((m + np.log(np.sum(np.exp(z - m)))) / lambda_lse)
    raise ValueError(f"unknown agg_func {agg_func!r}; expected one of {AGG_FUNCS}")


def pair_score(image, caption, cross_attn, lambda_softmax, agg_func, lambda_lse,
               raw_norm="clipped_l2norm", eps=1e-8):
    """SCAN score S(I, T) for one pair (Sec. 3.1 t2i Eqs. 1-4, Sec. 3.2 i2t Eqs. 5-8).
    image: (k, d) real regions only; caption: (n, d) real words only (no padding).
    Returns (score: float, attention: ndarray): (n, k) for t2i, (k, n) for i2t."""
    if cross_attn not in CROSS_ATTNS:
        raise ValueError(f"unknown cross_attn {cross_attn!r}; expected one of {CROSS_ATTNS}")
    if agg_func not in AGG_FUNCS:
        raise ValueError(f"unknown agg_func {agg_func!r}; expected one of {AGG_FUNCS}")
    if raw_norm not in RAW_NORMS:
        raise ValueError(f"unknown raw_norm {raw_norm!r}; expected one of {RAW_NORMS}")
    v = np.asarray(image, dtype=np.float64)
    e = np.asarray(caption, dtype=np.float64)
    k, n = v.shape[0], e.shape[0]
    s = np.zeros((k, n))
    for r in range(k):
        for w in range(n):
            s[r, w] = np.dot(v[r], e[w])

    if cross_attn == "t2i":
        # Eq. (1): normalise each region's row across the words.
        s_norm = np.zeros((k, n))
        for r in range(k):
            s_norm[r, :] = raw_feature_norm(s[r, :], 0, raw_norm, eps)
        alpha = np.zeros((n, k))
        rel = np.zeros(n)
        for w in range(n):
            alpha[w] = _softmax(lambda_softmax * s_norm[:, w], 0)   # Eq. (2), over regions
            a_w = np.zeros(v.shape[1])
            for r in range(k):
                a_w += alpha[w, r] * v[r]                           # attended image vector
            rel[w] = cosine(e[w], a_w, eps)                         # Eq. (3)
        return _pool(rel, agg_func, lambda_lse), alpha              # Eq. (4)

    # i2t, Eq. (5): normalise each word's column across the regions.
    s_norm = np.zeros((k, n))
    for w in range(n):
        s_norm[:, w] = raw_feature_norm(s[:, w], 0, raw_norm, eps)
    alpha = np.zeros((k, n))
    rel = np.zeros(k)
    for r in range(k):
        alpha[r] = _softmax(lambda_softmax * s_norm[r, :], 0)       # Eq. (6), over words
        a_r = np.zeros(e.shape[1])
        for w in range(n):
            a_r += alpha[r, w] * e[w]                               # attended sentence vector
        rel[r] = cosine(v[r], a_r, eps)                             # Eq. (7)
    return _pool(rel, agg_func, lambda_lse), alpha                  # Eq. (8)


def similarity_matrix(images, captions, image_lengths, caption_lengths, **kw):
    """S(I_i, T_c) for every pair. images (n_images, K, d) padded, captions (n_captions, N, d)
    padded; image_lengths[i] / caption_lengths[c] = number of real (leading) rows.
    Returns float64 (n_images, n_captions)."""
    images = np.asarray(images, dtype=np.float64)
    captions = np.asarray(captions, dtype=np.float64)
    out = np.zeros((images.shape[0], captions.shape[0]))
    for i in range(images.shape[0]):
        for c in range(captions.shape[0]):
            img = images[i, :int(image_lengths[i])]
            cap = captions[c, :int(caption_lengths[c])]
            out[i, c], _ = pair_score(img, cap, **kw)
    return out


def contrastive_loss(sims, margin=0.2, max_violation=True):
    """Eq. (9), VSE++ hinge triplet loss, summed over the batch (hardest negatives
    if max_violation). sims[i, c]: image i vs caption c; diagonal = positives."""
    sims = np.asarray(sims, dtype=np.float64)
    n = sims.shape[0]
    cost_s = np.zeros((n, n))
    cost_im = np.zeros((n, n))
    for i in range(n):
        for c in range(n):
            if i == c:
                continue
            cost_s[i, c] = max(0.0, margin + sims[i, c] - sims[i, i])
            cost_im[i, c] = max(0.0, margin + sims[i, c] - sims[c, c])
    if not max_violation:
        return float(cost_s.sum() + cost_im.sum())
    loss = 0.0
    for i in range(n):
        loss += max(cost_s[i, c] for c in range(n))
    for c in range(n):
        loss += max(cost_im[i, c] for i in range(n))
    return float(loss)


def gru_sequence(x, kernel, recurrent_kernel, bias, reverse=False):
    """Keras-layout GRU with reset_after=True over ONE unpadded sequence x (T, in).
    kernel (in, 3u), recurrent_kernel (u, 3u), bias (2, 3u); gate order [z, r, h].
    Returns the hidden state at every step (T, u), in the original time order."""
    x = np.asarray(x, dtype=np.float64)
    kernel = np.asarray(kernel, dtype=np.float64)
    recurrent_kernel = np.asarray(recurrent_kernel, dtype=np.float64)
    bias = np.asarray(bias, dtype=np.float64)
    T, u = x.shape[0], recurrent_kernel.shape[0]
    h = np.zeros(u)
    out = np.zeros((T, u))
    steps = range(T - 1, -1, -1) if reverse else range(T)
    for t in steps:
        xz, xr, xh = np.split(x[t] @ kernel + bias[0], 3)
        hz, hr, hh = np.split(h @ recurrent_kernel + bias[1], 3)
        z = _sigmoid(xz + hz)
        r = _sigmoid(xr + hr)
        cand = np.tanh(xh + r * hh)
        h = z * h + (1.0 - z) * cand
        out[t] = h
    return out


def clip_grad_norm(grads, max_norm):
    """torch.nn.utils.clip_grad_norm_ over all gradients together: each is
    scaled by max_norm / (total_norm + 1e-6) when that factor is below 1."""
    grads = [np.asarray(g, dtype=np.float64) for g in grads]
    total = np.sqrt(sum(np.sum(g * g) for g in grads))
    factor = min(max_norm / (total + 1e-6), 1.0)
    return [g * factor for g in grads]


def adam_step(weight, grad, m, v, step, lr, beta_1=0.9, beta_2=0.999, eps=1e-8,
              legacy_epsilon=False):
    """One step of torch.optim.Adam (step is 1-based); returns (weight, m, v).
    legacy_epsilon: eps added to sqrt(v) before the bias correction, as
    PyTorch did before 2019 and Keras' Adam does."""
    weight, grad, m, v = (np.asarray(a, dtype=np.float64) for a in (weight, grad, m, v))
    m = beta_1 * m + (1 - beta_1) * grad
    v = beta_2 * v + (1 - beta_2) * grad * grad
    correction_1 = 1 - beta_1 ** step
    correction_2 = 1 - beta_2 ** step
    if legacy_epsilon:
        update = lr * np.sqrt(correction_2) / correction_1 * m / (np.sqrt(v) + eps)
    else:
        update = lr / correction_1 * m / (np.sqrt(v) / np.sqrt(correction_2) + eps)
    return weight - update, m, v


if __name__ == "__main__":
    rng = np.random.default_rng(0)
    img, cap = rng.normal(size=(5, 8)), rng.normal(size=(4, 8))
    kw = dict(lambda_softmax=9.0, lambda_lse=6.0)
    sc_max, _ = pair_score(img, cap, "t2i", agg_func="max", **kw)
    sc_lse, att = pair_score(img, cap, "t2i", agg_func="logsumexp", **kw)
    assert att.shape == (4, 5) and np.allclose(att.sum(axis=1), 1.0)
    assert sc_max <= sc_lse <= sc_max + np.log(4) / 6.0 + 1e-12
    _, att_i = pair_score(img, cap, "i2t", agg_func="mean", **kw)
    assert att_i.shape == (5, 4) and np.allclose(att_i.sum(axis=1), 1.0)
    big, _ = pair_score(img * 100, cap * 100, "i2t", 9.0, "logsumexp", 50.0)
    assert np.isfinite(big)
    for kind in RAW_NORMS:
        for ca in CROSS_ATTNS:
            assert np.isfinite(pair_score(img, cap, ca, 4.0, "mean", 6.0, raw_norm=kind)[0])
    for bad in [dict(cross_attn="x"), dict(agg_func="x"), dict(raw_norm="x")]:
        args = dict(cross_attn="t2i", lambda_softmax=9.0, agg_func="mean", lambda_lse=6.0)
        args.update(bad)
        try:
            pair_score(img, cap, **args)
            raise AssertionError(f"no ValueError for {bad}")
        except ValueError:
            pass
    # Identical region/word sets with a single item -> cosine 1.
    one = rng.normal(size=(1, 8))
    assert abs(pair_score(one, one, "t2i", 9.0, "mean", 6.0)[0] - 1.0) < 1e-12
    # Padding is ignored.
    imgs = np.zeros((2, 6, 8)); caps = np.zeros((3, 5, 8))
    imgs[0, :5], imgs[1, :3] = img, img[:3]
    caps[0, :4], caps[1, :2], caps[2, :5] = cap, cap[:2], rng.normal(size=(5, 8))
    S = similarity_matrix(imgs, caps, [5, 3], [4, 2, 5], cross_attn="t2i",
                          lambda_softmax=9.0, agg_func="mean", lambda_lse=6.0)
    assert S.shape == (2, 3) and S.dtype == np.float64
    assert np.isclose(S[1, 1], pair_score(img[:3], cap[:2], "t2i", 9.0, "mean", 6.0)[0])
    # Loss.
    assert contrastive_loss(np.eye(3) * 1.0 + 0.1, margin=0.2) == 0.0
    sims = np.array([[0.5, 0.6], [0.1, 0.4]])
    # cost_s[0,1]=0.3, cost_s[1,0]=0; cost_im[0,1]=0.2+0.6-0.4=0.4, cost_im[1,0]=0.2+0.1-0.5<0
    assert np.isclose(contrastive_loss(sims, 0.2, True), 0.7)
    assert np.isclose(contrastive_loss(sims, 0.2, False), 0.7)
    s3 = rng.normal(size=(4, 4))
    assert contrastive_loss(s3, 0.2, True) <= contrastive_loss(s3, 0.2, False) + 1e-12
    # GRU: zero weights -> h stays 0; reverse == forward on reversed input, flipped back.
    u, din, T = 3, 2, 5
    xs = rng.normal(size=(T, din))
    kern, rk, b = rng.normal(size=(din, 3 * u)), rng.normal(size=(u, 3 * u)), rng.normal(size=(2, 3 * u))
    assert np.all(gru_sequence(xs, 0 * kern, 0 * rk, 0 * b) == 0.0)
    fwd_rev = gru_sequence(xs[::-1], kern, rk, b)[::-1]
    assert np.allclose(gru_sequence(xs, kern, rk, b, reverse=True), fwd_rev)
    # Single step by hand.
    h1 = gru_sequence(xs[:1], kern, rk, b)[0]
    xz, xr, xh = np.split(xs[0] @ kern + b[0], 3)
    hz, hr, hh = np.split(b[1], 3)
    z = 1 / (1 + np.exp(-(xz + hz))); r = 1 / (1 + np.exp(-(xr + hr)))
    assert np.allclose(h1, (1 - z) * np.tanh(xh + r * hh))
    print("reference self-checks passed")
