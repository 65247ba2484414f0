"""The published DeeperCluster arithmetic, written out from facebookresearch/DeeperCluster at d38ada1 (read for
facts only), against fdsl's: the per-group rounding of an epoch (docs/ssl.md row 2) and which images the PCA is
fitted on (row 3)."""
import numpy as np
import pytest

from fdsl.engine.distributed import DistInfo
from fdsl.ssl.deepercluster import Layout


@pytest.mark.parametrize("n,batch,world,super_classes,steps", [
    (95_920_149, 48, 64, 16, 31_216),  # the paper (README: 48 per process, 64 processes, 16 super-classes)
    (600, 8, 1, 16, 64),  # 600 // 4 // 4 = 37 a group, 32 after rounding (rounded once, 592: 74 steps)
    (1000, 8, 1, 4, 124),  # nsc 1: 1000 // 4 = 250 -> 248 a group (rounded once: 125 steps)
])
def test_the_rounding_is_per_group_as_published(n, batch, world, super_classes, steps):
    from fdsl.ssl.deepercluster import published_epoch_images

    images = published_epoch_images(n, Layout(4 * super_classes, super_classes, True), batch * world)
    assert images == steps * batch * world


def published_pca_images(n, feature_dim, batch, world):
    """The images the published PCA is fitted on: rank r features the contiguous slice [r L, (r + 1) L),
    L = n // world (clustering.py:35-36), and keeps its first int(D(D - 1) / 2 / batch / world) batches,
    capped by its loader's batches (distributed_kmeans.py:36-43); rank 0 gathers them all."""
    local = n // world
    batches = min(int(feature_dim * (feature_dim - 1) / 2 / batch / world), -(-local // batch))
    return {r * local + i for r in range(world) for i in range(min(batches * batch, local))}


def fdsl_pca_images(n, feature_dim, batch, world):
    from fdsl.ssl.clustering import RoundConfig, pca_rows

    cfg = RoundConfig(k=2, nsc=1, dim_pca=2, batch_size=batch)
    images = set()
    for rank in range(world):
        ids = np.arange(rank, n, world)  # fdsl's strided shares (data.samplers.ShardSampler)
        rows = pca_rows(ids.size, feature_dim, cfg, DistInfo(rank=rank, world_size=world), epoch=0)
        images |= set(ids[slice(None) if rows is None else rows].tolist())
    return images


@pytest.mark.parametrize("world", [1, 2, 3])
def test_the_pca_sample_is_the_published_one_up_to_world_x_rows_images(world):
    """docs/ssl.md row 3: the same images with one process or while each process's slice fits in its c rows
    (n // world <= c; the published slices leave out the last n % world images); above, as many images but
    other ones (the published first c of each contiguous slice, fdsl's first c x world)."""
    from fdsl.ssl.clustering import published_pca_rows

    feature_dim, batch = 8, 2  # D(D - 1) / 2 = 28 images
    c = published_pca_rows(feature_dim, batch, world)
    for n in range(12, 80):
        published, ours = published_pca_images(n, feature_dim, batch, world), fdsl_pca_images(n, feature_dim,
                                                                                              batch, world)
        if world == 1:
            assert published == ours, n
        elif n // world <= c:  # every slice whole: the published one leaves out the last n % world images
            assert published <= ours and ours - published <= set(range(n // world * world, n)), n
        else:
            assert published != ours and len(published) == len(ours) == c * world, n
