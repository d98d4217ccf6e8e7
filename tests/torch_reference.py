"""The reference PyTorch code's model and training step, written out in torch.

Written from the paper and the authors' code (github.com/kuanghuei/SCAN):
its encoders (`fc`; `embed` + `rnn` over packed sequences), the
per-caption loop of its cross attention (`xattn_score_t2i`, `xattn_score_i2t`),
its contrastive loss, and its training step (`loss.backward()`,
`clip_grad_norm_`, `torch.optim.Adam`). Tests compare the Keras package
against it: same weights (through `load_official_checkpoint`), same
batches, same steps.
"""

import math
import warnings

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


def l2norm(x, dim=-1, eps=1e-8):
    """x / (||x|| + eps) along `dim`, as the reference code writes it."""
    return x / (x.pow(2).sum(dim=dim, keepdim=True).sqrt() + eps)


class ImageEncoder(nn.Module):
    """The reference code's precomputed-feature image encoder."""

    def __init__(self, opt):
        super().__init__()
        self.no_imgnorm = opt.no_imgnorm
        self.fc = nn.Linear(opt.img_dim, opt.embed_size)
        if opt.precomp_enc_type == "weight_norm":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # deprecated in newer torch
                self.fc = nn.utils.weight_norm(self.fc, dim=None)

    def init_weights(self):
        """Xavier uniform on the weight, zero bias (the reference's init)."""
        r = math.sqrt(6.0) / math.sqrt(self.fc.in_features + self.fc.out_features)
        self.fc.weight.data.uniform_(-r, r)
        self.fc.bias.data.fill_(0)

    def forward(self, features):
        x = self.fc(features)
        return x if self.no_imgnorm else l2norm(x)


class TextEncoder(nn.Module):
    """The reference code's text encoder: embedding, then a GRU over packed
    sequences; a bidirectional GRU's two halves are averaged."""

    def __init__(self, opt):
        super().__init__()
        self.opt = opt
        self.embed = nn.Embedding(opt.vocab_size, opt.word_dim)
        self.rnn = nn.GRU(
            opt.word_dim,
            opt.embed_size,
            opt.num_layers,
            batch_first=True,
            bidirectional=opt.bi_gru,
        )

    def init_weights(self):
        """U(-0.1, 0.1) word embeddings; the GRU keeps torch's default."""
        self.embed.weight.data.uniform_(-0.1, 0.1)

    def forward(self, token_ids, lengths):
        packed = pack_padded_sequence(
            self.embed(token_ids), lengths, batch_first=True, enforce_sorted=False
        )
        out, _ = self.rnn(packed)
        out, _ = pad_packed_sequence(
            out, batch_first=True, total_length=token_ids.shape[1]
        )
        if self.opt.bi_gru:
            h = self.opt.embed_size
            out = (out[..., :h] + out[..., h:]) / 2
        return out if self.opt.no_txtnorm else l2norm(out)


def save_checkpoint(path, encoders, opt, image_state=None, text_state=None):
    """`model_best.pth.tar` as the reference code writes it."""
    image_state = encoders[0].state_dict() if image_state is None else image_state
    text_state = encoders[1].state_dict() if text_state is None else text_state
    torch.save(
        {
            "model": [image_state, text_state],
            "opt": opt,
            "epoch": 3,
            "best_rsum": 400.0,
            "Eiters": 100,
        },
        path,
    )
    return str(path)


# ------------------------------------------------------- attention and loss


def _cosine(x1, x2, dim, eps=1e-8):
    w12 = (x1 * x2).sum(dim)
    w1 = x1.norm(2, dim)
    w2 = x2.norm(2, dim)
    return w12 / (w1 * w2).clamp(min=eps)


def _attend(query, context, opt, smooth):
    """Attended context vectors for each query vector: (n, L_q, d)."""
    attn = torch.bmm(context, query.transpose(1, 2))  # (n, L_c, L_q)
    norm = opt.raw_feature_norm
    if norm == "clipped_l2norm":
        attn = l2norm(nn.functional.leaky_relu(attn, 0.1), dim=2)
    elif norm == "l2norm":
        attn = l2norm(attn, dim=2)
    elif norm == "clipped":
        attn = nn.functional.leaky_relu(attn, 0.1)
    elif norm == "softmax":
        attn = nn.functional.softmax(attn, dim=2)
    elif norm != "no_norm":
        raise ValueError(norm)
    attn = nn.functional.softmax(attn.transpose(1, 2) * smooth, dim=2)  # (n, L_q, L_c)
    return torch.bmm(attn, context)


def _pool(row_sim, opt):
    if opt.agg_func == "LogSumExp":
        return torch.log(torch.exp(row_sim * opt.lambda_lse).sum(1)) / opt.lambda_lse
    if opt.agg_func == "Mean":
        return row_sim.mean(1)
    if opt.agg_func == "Max":
        return row_sim.max(1)[0]
    if opt.agg_func == "Sum":
        return row_sim.sum(1)
    raise ValueError(opt.agg_func)


def similarities(regions, words, lengths, opt):
    """(n_images, n_captions), one caption at a time as the reference code."""
    columns = []
    for i in range(words.shape[0]):
        caption = words[i, : int(lengths[i])].unsqueeze(0)
        caption = caption.expand(regions.shape[0], -1, -1)
        if opt.cross_attn == "t2i":
            attended = _attend(caption, regions, opt, opt.lambda_softmax)
            row_sim = _cosine(caption, attended, dim=2)
        else:
            attended = _attend(regions, caption, opt, opt.lambda_softmax)
            row_sim = _cosine(regions, attended, dim=2)
        columns.append(_pool(row_sim, opt).view(-1, 1))
    return torch.cat(columns, 1)


def contrastive_loss(scores, margin, max_violation):
    """The hinge loss of the reference code, summed over the batch."""
    diagonal = scores.diag().view(-1, 1)
    cost_s = (margin + scores - diagonal.expand_as(scores)).clamp(min=0)
    cost_im = (margin + scores - diagonal.t().expand_as(scores)).clamp(min=0)
    eye = torch.eye(scores.shape[0], dtype=torch.bool)
    cost_s = cost_s.masked_fill(eye, 0)
    cost_im = cost_im.masked_fill(eye, 0)
    if max_violation:
        cost_s = cost_s.max(1)[0]
        cost_im = cost_im.max(0)[0]
    return cost_s.sum() + cost_im.sum()


# ------------------------------------------------------------- training


def reference_encoders(opt, seed=0):
    """The two encoders, initialised as the reference code initialises them."""
    torch.manual_seed(seed)
    encoders = ImageEncoder(opt), TextEncoder(opt)
    for encoder in encoders:
        encoder.init_weights()
    return encoders


class Trainer:
    """The reference training step: `loss.backward()`, `clip_grad_norm_`
    over all weights, then `torch.optim.Adam`'s step.

    `optimizer` is `"torch_adam"` (torch.optim.Adam as PyTorch runs it
    today) or `"torch_adam_legacy"` (epsilon added before the bias
    correction, as PyTorch did before 2019).
    """

    def __init__(self, encoders, opt, lr, optimizer="torch_adam"):
        self.encoders = encoders
        self.opt = opt
        self.params = [p for encoder in encoders for p in encoder.parameters()]
        self.adam = torch.optim.Adam(self.params, lr=lr)
        self.legacy = optimizer == "torch_adam_legacy"
        self.steps = 0

    def step(self, features, token_ids):
        """One training step on a batch; returns its loss."""
        self.adam.zero_grad()
        lengths = torch.from_numpy((token_ids != 0).sum(axis=1))
        regions = self.encoders[0](torch.from_numpy(np.asarray(features)))
        words = self.encoders[1](torch.from_numpy(np.asarray(token_ids)).long(), lengths)
        loss = contrastive_loss(
            similarities(regions, words, lengths, self.opt),
            self.opt.margin,
            self.opt.max_violation,
        )
        loss.backward()
        if self.opt.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.params, self.opt.grad_clip)
        self.steps += 1
        if self.legacy:
            _legacy_adam_step(self.adam, self.steps)
        else:
            self.adam.step()
        return loss.item()

    def state_arrays(self):
        """The two encoders' state dicts as NumPy arrays."""
        return tuple(
            {k: v.detach().numpy().copy() for k, v in encoder.state_dict().items()}
            for encoder in self.encoders
        )


@torch.no_grad()
def _legacy_adam_step(adam, step):
    """torch.optim.Adam's step as PyTorch wrote it before 2019."""
    group = adam.param_groups[0]
    beta_1, beta_2 = group["betas"]
    for p in group["params"]:
        state = adam.state.setdefault(p, {})
        if not state:
            state["m"] = torch.zeros_like(p)
            state["v"] = torch.zeros_like(p)
        m, v = state["m"], state["v"]
        m.mul_(beta_1).add_(p.grad, alpha=1 - beta_1)
        v.mul_(beta_2).addcmul_(p.grad, p.grad, value=1 - beta_2)
        step_size = group["lr"] * math.sqrt(1 - beta_2**step) / (1 - beta_1**step)
        p.addcdiv_(m, v.sqrt().add_(group["eps"]), value=-step_size)
