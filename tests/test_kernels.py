"""pcc, pfk and pfk-sum against explicit loops; chunked top-K against the full matrix."""
import numpy as np
import pytest
import torch

from fkal.kernels import Features, pcc, pfk, pfk_sum, topk_similar

DIMS = (3, 5, 4)


def random_features(n, seed, fisher=True):
    g = torch.Generator().manual_seed(seed)
    z = [torch.randn(n, d, generator=g) for d in DIMS]
    return Features(z, [torch.randn(n, d, generator=g) for d in DIMS] if fisher else None)


def pearson(a, b):
    return float(np.corrcoef(a.numpy(), b.numpy())[0, 1])


def test_standardized_rows_give_pearson_correlations():
    f = random_features(6, 0).standardized()
    raw = random_features(6, 0)
    assert pytest.approx(float(f.z[1][2] @ f.z[1][4]), abs=1e-6) == pearson(raw.z[1][2], raw.z[1][4])
    torch.testing.assert_close(f.z[0].mean(1), torch.zeros(6), atol=1e-6, rtol=0)
    torch.testing.assert_close(f.z[0].norm(dim=1), torch.ones(6))


@pytest.mark.parametrize("name", ["pcc", "pfk", "pfk-sum"])
def test_kernels_equal_explicit_loops(name):
    a, b = random_features(4, 1), random_features(7, 2)
    fn = {"pcc": pcc, "pfk": pfk, "pfk-sum": pfk_sum}[name]
    got = fn(a.standardized(), b.standardized())
    expected = torch.zeros(4, 7, dtype=torch.float64)
    for m in range(4):
        for n in range(7):
            for j in range(len(DIMS)):
                rz = pearson(a.z[j][m], b.z[j][n])                        # eq. 6 term
                rg = pearson(a.g[j][m], b.g[j][n])
                expected[m, n] += {"pcc": rz, "pfk": rz * rg, "pfk-sum": rz + rg}[name]   # eq. 12 / release
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-6)


def test_pfk_is_the_inner_product_of_vec_g_zT():
    """eq. 11: per scale, g_m(theta)^T g_n(theta) with g(theta) = vec(g z^T) is (z_m^T z_n)(g_m^T g_n)."""
    a, b = random_features(3, 3), random_features(2, 4)
    vec = lambda f, i: torch.cat([torch.outer(f.g[j][i], f.z[j][i]).flatten() for j in range(1)])
    one = lambda f: Features(f.z[:1], f.g[:1])
    k = pfk(one(a), one(b))
    for m in range(3):
        for n in range(2):
            torch.testing.assert_close(k[m, n], vec(a, m) @ vec(b, n))


def test_topk_similar_in_chunks_equals_the_full_matrix():
    centers, pool = random_features(5, 5).standardized(), random_features(103, 6).standardized()
    values, index = topk_similar(pfk, centers, pool, k=9, chunk=10)
    full_v, full_i = pfk(centers, pool).topk(9, dim=1)
    torch.testing.assert_close(values, full_v)
    assert torch.equal(index, full_i)


def test_disk_features_read_listed_rows_as_the_slices_do(tmp_path):
    """``DiskFeatures.rows`` of a list of rows (in any order, repeated) equals those rows read one slice at a
    time, and the stored rows equal the standardized features up to float16 rounding."""
    from fkal.kernels import DiskFeatures
    f = random_features(13, seed=5)
    disk = DiskFeatures(tmp_path, how="unit")
    disk.append([z[:8] for z in f.z], [g[:8] for g in f.g])
    disk.append([z[8:] for z in f.z], [g[8:] for g in f.g])
    order = [12, 0, 7, 7, 3]
    listed = disk.rows(order)
    for j in range(len(f.z)):
        one_by_one = torch.cat([disk.rows(slice(i, i + 1)).z[j] for i in order])
        assert torch.equal(listed.z[j], one_by_one)
        assert torch.equal(listed.g[j], torch.cat([disk.rows(slice(i, i + 1)).g[j] for i in order]))
        np.testing.assert_allclose(listed.z[j].numpy(), f.standardized().z[j][order].numpy(), atol=2e-3)
    assert len(disk.rows([]).z[0]) == 0


def test_disk_features_defaults_folders_empty_reads_and_devices(tmp_path):
    """The defaults and edges of ``DiskFeatures``: unit standardization unless told (stored rows and
    ``standardized()``), a folder made with its parents, an empty slice read as ``[0, L_j]`` per scale, another
    standardization refused by name, ``to`` recording the device, and the files mapped read-only."""
    from fkal import kernels
    from fkal.kernels import DiskFeatures
    f = random_features(6, seed=2)
    disk = DiskFeatures(tmp_path / "pool" / "features")                 # parents made on the way
    disk.append(f.z, f.g)
    for j in range(len(f.z)):
        np.testing.assert_allclose(disk.rows(slice(0, 6)).z[j].numpy(), f.standardized().z[j].numpy(), atol=2e-3)
    assert disk.standardized() is disk
    with pytest.raises(ValueError, match="stored standardized by 'unit', not 'release'"):
        disk.standardized("release")
    for empty in (slice(4, 4), slice(5, 2)):
        got = disk.rows(empty)
        assert [tuple(t.shape) for t in got.z] == [(0, t.shape[1]) for t in f.z]
    assert disk.to("cpu").device == torch.device("cpu")
    modes = []
    real = kernels.np.memmap

    def spy(*args, **kwargs):
        modes.append(kwargs.get("mode"))
        return real(*args, **kwargs)

    kernels.np.memmap, saved = spy, real
    try:
        disk.rows([1, 3])
    finally:
        kernels.np.memmap = saved
    assert modes and set(modes) == {"r"}


def test_standardize_release_eps_and_two_values():
    """``(v - mean) / (std + eps)`` with eps = 1e-10 added, not subtracted: a row whose std is exactly eps gives
    half the unit-std values (subtracting it divides by zero); a constant row gives zeros; two values per row are
    enough for the unbiased std (one is not)."""
    from fkal.kernels import standardize_release
    v = torch.tensor([[0.0, 2 ** 0.5 * 1e-10], [3.0, 3.0]], dtype=torch.float64)
    got = standardize_release(v)
    torch.testing.assert_close(got, torch.tensor([[-2 ** -1.5, 2 ** -1.5], [0.0, 0.0]], dtype=torch.float64))
    torch.testing.assert_close(standardize_release(torch.tensor([[1.0, 3.0]])), torch.tensor([[-2 ** -0.5, 2 ** -0.5]]))
    with pytest.raises(ValueError, match="at least 2 values"):
        standardize_release(torch.ones(3, 1))
