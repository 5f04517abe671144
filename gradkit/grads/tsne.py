"""t-SNE pictures of gradient directions, kept comparable across epochs.

On unit directions ``u_i = g_i / ||g_i||`` the squared Euclidean distance is ``2 - 2 cos_ij``,
so a t-SNE of the directions sees exactly the cosine geometry of :mod:`gradkit.grads.similarity`.
It runs on those distances (``metric="precomputed"``, :func:`direction_distances`), which the
Gram matrix gives as well as the rows: ``K_ii + K_jj - 2 K_ij`` of the normalised ``K``.
"""

from __future__ import annotations

import numpy as np
import torch

from gradkit.grads.similarity import cosine_matrix

__all__ = ["align_embedding", "default_perplexity", "direction_distances",
           "embedding_silhouette", "knn_overlap", "pca_start", "tsne_directions"]


def direction_distances(grads) -> np.ndarray:
    """``||u_i - u_j||² = 2 - 2 cos_ij`` -> float64 ``[N, N]`` (zero diagonal), from gradient
    rows ``[N, D]`` or a :class:`~gradkit.grads.gram_matrix.Gram`: what t-SNE sees."""
    d = (2.0 - 2.0 * cosine_matrix(grads)).clamp_min_(0.0)
    d.fill_diagonal_(0.0)
    return d.numpy()


def pca_start(distances: np.ndarray) -> np.ndarray:
    """scikit-learn's PCA initialisation from the squared distances alone: the first two
    principal-component scores of the points (classical MDS: the top eigenpairs of the double-
    centred ``-D/2``), scaled so that the first has std 1e-4 as scikit-learn scales its own."""
    d = torch.as_tensor(distances, dtype=torch.float64)
    n = d.shape[0]
    h = torch.eye(n, dtype=d.dtype) - 1.0 / n
    vals, vecs = torch.linalg.eigh(-0.5 * h @ d @ h)
    top = vecs[:, -2:].flip(1) * vals[-2:].flip(0).clamp_min(0).sqrt()
    big = top.abs().argmax(0)  # each column's largest entry positive (as svd_flip): one sign
    top = top * torch.sign(top[big, torch.arange(2)]).where(top[big, torch.arange(2)] != 0, 1.0)
    return (top / max(float(top[:, 0].std()), 1e-30) * 1e-4).numpy().astype(np.float32)


def default_perplexity(n: int) -> float:
    """scikit-learn's 30, lowered to ``(N - 1) / 3`` for small sets (it must stay below N)."""
    return float(min(30.0, max(1.0, (n - 1) / 3)))


def tsne_directions(grads, init: np.ndarray | None = None, perplexity: float | None = None,
                    seed: int = 0, max_iter: int = 1000,
                    early_exaggeration: float | None = None) -> np.ndarray:
    """2-D t-SNE (scikit-learn) of the unit directions ``u_i``; returns ``[N, 2]``.

    ``grads``: rows ``[N, D]`` or a :class:`~gradkit.grads.gram_matrix.Gram`. On unit vectors
    the squared Euclidean distance is ``||u_i - u_j||^2 = 2 - 2 cos_ij``, so t-SNE sees exactly
    the cosine geometry; it runs on these distances (:func:`direction_distances`, as
    scikit-learn's Euclidean t-SNE squares its distances), from :func:`pca_start` (its PCA
    init) without ``init``. ``init`` (say, the previous epoch's embedding) keeps pictures
    stable across epochs: it is centred and scaled to std 1e-4 like scikit-learn's own PCA
    init, and the result is rotated / reflected onto it (:func:`align_embedding`).
    A warm start also switches early exaggeration off (default 1 instead of scikit-learn's 12):
    its job, building the global layout from a random start, is done by the init, and at 12 it
    scatters that layout again (see ``test_tsne_initialised_from_the_previous_epoch_...``).
    """
    from sklearn.manifold import TSNE

    dist = direction_distances(grads)
    n = dist.shape[0]
    if n < 3:
        raise ValueError(f"t-SNE needs at least 3 gradients, got {n}")
    start = pca_start(dist)
    if init is not None:
        init = np.asarray(init, dtype=np.float64)
        if init.shape != (n, 2):
            raise ValueError(f"init must have shape ({n}, 2), got {init.shape}")
        centred = init - init.mean(axis=0)
        start = (centred / max(centred[:, 0].std(), 1e-12) * 1e-4).astype(np.float32)
    if early_exaggeration is None:
        early_exaggeration = 12.0 if init is None else 1.0
    tsne = TSNE(n_components=2, perplexity=perplexity or default_perplexity(n), init=start,
                early_exaggeration=early_exaggeration, random_state=seed, max_iter=max_iter,
                method="exact" if n <= 500 else "barnes_hut", metric="precomputed")
    emb = tsne.fit_transform(dist.astype(np.float32)).astype(np.float64)
    return emb if init is None else align_embedding(emb, init)


def align_embedding(emb: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Rotate / reflect ``emb`` (about its centre) onto ``ref`` by orthogonal Procrustes:
    ``R = argmin_{R^T R = I} ||(emb - mean) R - (ref - mean)||_F``; distances are unchanged."""
    from scipy.linalg import orthogonal_procrustes

    a = emb - emb.mean(axis=0)
    b = ref - ref.mean(axis=0)
    r, _ = orthogonal_procrustes(a, b)
    return a @ r + ref.mean(axis=0)


def embedding_silhouette(emb: np.ndarray, labels) -> float:
    """Silhouette by class of the 2-D embedding (Euclidean): how separated the picture looks."""
    from sklearn.metrics import silhouette_score

    return float(silhouette_score(np.asarray(emb), np.asarray(labels)))




def knn_overlap(a: np.ndarray, b: np.ndarray, k: int = 5) -> float:
    """Mean share of each point's ``k`` nearest neighbours (Euclidean, itself excluded) that are
    the same in embeddings ``a`` and ``b`` of the same points: 1 = the same neighbourhoods,
    about ``k / (N - 1)`` for unrelated maps. Invariant to rotation, reflection and scale."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"a and b must be [N, d] of the same shape, got {a.shape}, {b.shape}")
    n = a.shape[0]
    if not 1 <= k < n:
        raise ValueError(f"k must lie in [1, N-1] = [1, {n - 1}], got {k}")

    def neighbours(e):
        d = ((e[:, None] - e[None]) ** 2).sum(-1) + np.diag(np.full(n, np.inf))
        return np.argsort(d, axis=1, kind="stable")[:, :k]

    na, nb = neighbours(a), neighbours(b)
    return float(np.mean([len(set(na[i]) & set(nb[i])) / k for i in range(n)]))
