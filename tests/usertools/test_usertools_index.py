"""faiss gallery indexes (clipreid_plugin.usertools.index), search(index=...), tools/search.py --index and
benchmarks/search_index.py --tiny."""

import importlib.util
import json
import os
import sys

import numpy as np
import pytest
import torch

from clipreid_plugin.usertools import GalleryIndex, save_features, search
from clipreid_plugin.usertools.index import default_nlist
from clipreid_plugin.utils.errors import InvalidInputError, MissingDependencyError

from test_usertools_extract import REPO, load_tool

faiss = pytest.importorskip("faiss", reason="faiss is the [faiss] extra: pip install -e '.[faiss]'")


def clusters(num_clusters=20, per_cluster=30, dim=32, seed=0):
    """Well-separated clusters: every point's nearest neighbours are its own cluster's points."""
    rng = np.random.RandomState(seed)
    centres = rng.randn(num_clusters, dim) * 10
    labels = np.repeat(np.arange(num_clusters), per_cluster)
    return (centres[labels] + rng.randn(len(labels), dim)).astype(np.float32), labels


def brute_force(query, gallery, k, metric="euclidean"):
    """Independent expectation in numpy: normalise, full distance matrix, stable argsort."""
    qn = query / np.linalg.norm(query, axis=1, keepdims=True)
    gn = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
    if metric == "cosine":
        dist = 1 - qn @ gn.T
    else:
        dist = ((qn[:, None, :] - gn[None, :, :]) ** 2).sum(-1)
    idx = np.argsort(dist, axis=1, kind="stable")[:, :k]
    return idx, np.take_along_axis(dist, idx, 1)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_flat_index_equals_exact_search(metric):
    rng = np.random.RandomState(3)
    gallery, query = rng.randn(300, 16).astype(np.float32), rng.randn(7, 16).astype(np.float32)
    idx, dist = search(query, gallery, topk=5, metric=metric, index="flat", device="cpu")
    want_idx, want_dist = brute_force(query, gallery, 5, metric)
    np.testing.assert_array_equal(idx.numpy(), want_idx)
    np.testing.assert_allclose(dist.numpy(), want_dist, atol=1e-5)
    assert idx.dtype == torch.int64 and dist.dtype == torch.float32


def test_ivf_probing_every_cell_is_exhaustive_and_a_built_index_is_reused():
    gallery, _ = clusters()
    query = gallery[::50] + 0.01
    index = GalleryIndex(gallery, "ivf", nlist=8, nprobe=8, device="cpu")
    assert (index.nlist, index.nprobe) == (8, 8)
    idx, dist = search(query, None, topk=6, index=index)
    want_idx, want_dist = brute_force(query, gallery, 6)
    np.testing.assert_array_equal(idx.numpy(), want_idx)
    np.testing.assert_allclose(dist.numpy(), want_dist, atol=1e-5)


def test_ivfpq_finds_the_query_cluster():
    gallery, labels = clusters()
    query = gallery[5::60] + 0.05
    idx, dist = search(query, gallery, topk=10, index="ivfpq", nlist=4, pq_m=8, device="cpu")
    # 30 points per cluster, far apart: all 10 neighbours belong to the query's cluster
    assert (labels[idx.numpy()] == labels[5::60][:, None]).all()
    assert (dist[:, 1:] >= dist[:, :-1] - 1e-6).all()  # nearest first


def test_index_defaults_and_errors():
    # power of two nearest sqrt(N), at most N // 39 (1000 items: 32 -> 25), at least 1
    assert default_nlist(1_000_000) == 1024 and default_nlist(10_000) == 128
    assert default_nlist(1000) == 25 and default_nlist(20) == 1
    gallery = np.random.RandomState(0).randn(100, 12).astype(np.float32)
    with pytest.raises(ValueError, match="Unknown index kind 'hnsw'"):
        GalleryIndex(gallery, "hnsw")
    with pytest.raises(ValueError, match="pq_m=5 must divide the feature dimension 12"):
        GalleryIndex(gallery, "ivfpq", nlist=2, pq_m=5)
    with pytest.raises(ValueError, match="nprobe applies to IVF indexes"):
        GalleryIndex(gallery, "flat").set_nprobe(3)
    with pytest.raises(ValueError, match="need an index"):
        search(gallery[:2], gallery, nprobe=4)
    with pytest.raises(ValueError, match="dimension 5 but the index 12"):
        GalleryIndex(gallery, "flat").search(np.ones((1, 5), np.float32))


def test_index_rejects_options_its_kind_does_not_use():
    gallery = np.random.RandomState(0).randn(100, 12).astype(np.float32)
    with pytest.raises(InvalidInputError, match=r"^Index option nprobe not used by index kind 'flat' "
                                                r"\(its options: none\)\.$"):
        GalleryIndex(gallery, "flat", nprobe=4)
    with pytest.raises(InvalidInputError, match=r"^Index options pq_m, pq_bits not used by index kind 'ivf' "
                                                r"\(its options: nlist, nprobe, train_size\)\.$"):
        GalleryIndex(gallery, "ivf", nlist=2, pq_m=4, pq_bits=4)
    with pytest.raises(InvalidInputError, match="nlist not used by index kind 'flat'"):
        search(gallery[:2], gallery, index="flat", nlist=4, device="cpu")  # search builds it: the same check
    GalleryIndex(gallery, "ivf", nlist=2, nprobe=None, pq_m=None, device="cpu")  # None is "not given"


def test_without_faiss_the_message_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)
    with pytest.raises(MissingDependencyError, match=r"clipreid_plugin\[faiss\]"):
        search(np.ones((1, 4), np.float32), np.ones((3, 4), np.float32), index="ivf")
    search(np.ones((1, 4), np.float32), np.ones((3, 4), np.float32))  # exact search needs nothing


def test_search_command_line_with_an_ivf_index(tmp_path, capsys):
    gallery, _ = clusters(num_clusters=10, per_cluster=20, dim=8)
    paths = [f"g{i:03d}.jpg" for i in range(len(gallery))]
    save_features(str(tmp_path / "g.npz"), gallery, paths)
    save_features(str(tmp_path / "q.npz"), gallery[[0, 45]] + 0.01, ["q0.jpg", "q1.jpg"])
    out = tmp_path / "ranks.json"
    load_tool("search").main(["--gallery", str(tmp_path / "g.npz"), "--query-feats", str(tmp_path / "q.npz"),
                              "--index", "ivf", "--nlist", "4", "--nprobe", "4", "--topk", "3", "--output", str(out)])
    ranked = json.loads(out.read_text())
    want, _ = brute_force(gallery[[0, 45]] + 0.01, gallery, 3)
    assert [[r["path"] for r in item["results"]] for item in ranked] == [[paths[i] for i in row] for row in want]
    from clipreid_plugin.utils.cli import run_tool

    code = run_tool(lambda: load_tool("search").main(["--gallery", str(tmp_path / "g.npz"), "--query-feats",
                                                      str(tmp_path / "q.npz"), "--nprobe", "4"]))
    err = capsys.readouterr().err
    assert code == 2 and "--nprobe" in err and "Traceback" not in err


def test_search_index_benchmark_tiny_runs_and_prints_ratios(capsys):
    spec = importlib.util.spec_from_file_location("search_index_bench", os.path.join(REPO, "benchmarks",
                                                                                     "search_index.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    threads, faiss_threads = torch.get_num_threads(), faiss.omp_get_max_threads()
    try:
        assert bench.main(["--tiny"]) == 0
    finally:
        torch.set_num_threads(threads)
        faiss.omp_set_num_threads(faiss_threads)
    rows = [line.split("|")[1:-1] for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    header, body = rows[0], {r[0].strip(): [c.strip() for c in r[1:]] for r in rows[1:]}
    assert [h.strip() for h in header] == ["method", "build (s)", "queries/s", "speed-up vs exact", "recall@10"]
    assert body["exact (torch, default)"][2:] == ["1.0x", "1.000"]
    assert body["faiss flat"][3] == "1.000"  # exact by faiss: same top-10
    assert len(body) == 5 and all(float(v[3]) > 0.5 for v in body.values())


def test_search_summary_says_when_ivfpq_codes_are_shorter_than_8_bits(tmp_path, capsys):
    """500 items train at most 2^3 centroids per sub-quantiser at 39 points each: 3-bit codes, said
    in the summary line under the lists; --help and docs/TOOLS.md state the one --nlist rule."""
    gallery, _ = clusters(num_clusters=25, per_cluster=20, dim=16)
    save_features(str(tmp_path / "g.npz"), gallery, [f"g{i:03d}.jpg" for i in range(len(gallery))])
    save_features(str(tmp_path / "q.npz"), gallery[:2] + 0.01, ["q0.jpg", "q1.jpg"])
    tool = load_tool("search")
    tool.main(["--gallery", str(tmp_path / "g.npz"), "--query-feats", str(tmp_path / "q.npz"), "--index", "ivfpq",
               "--topk", "3"])
    out = capsys.readouterr().out
    # default nlist: sqrt(500) = 22.4 -> 16 (the nearest power of two), under 500 / 39 = 12 -> 12
    assert ("Searched with a faiss ivfpq index over 500 x 16 features" in out and "nlist 12, nprobe 8" in out
            and "2 x 3-bit PQ codes (not 8-bit: 500 items train at most 8 centroids per sub-quantiser" in out), out
    from clipreid_plugin.usertools.index import NLIST_RULE, default_nlist

    assert default_nlist(500) == 12 and default_nlist(1_000_000) == 1024 and default_nlist(20) == 1
    help_text = " ".join(tool.build_parser().format_help().split())
    with open(os.path.join(REPO, "docs", "TOOLS.md")) as f:
        docs = f.read()
    assert NLIST_RULE in help_text and f"default: {NLIST_RULE}" in docs
