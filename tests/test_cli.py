"""The softpool-nd command line, run as a user runs it (subprocess) and in-process for the rare paths."""

import math
import os
import re
import subprocess
import sys
import types

import numpy as np
import pytest

import softpool_nd
from softpool_nd.__main__ import main
from softpool_nd.cli import bench as cli_bench
from softpool_nd.cli import demo as cli_demo
from softpool_nd.cli.baselines import avg_pool, max_pool, upsample_nearest
from softpool_nd.cli.metrics import mean_abs_diff, psnr, ssim
from softpool_nd.cli.scenes import still

Image = pytest.importorskip("PIL.Image", reason="the demo needs Pillow (softpool_nd[demo])")

# label band of figure.grid: 2 lines of 14 px + 4; gaps of 6 px around every panel
_LABEL, _GAP = 32, 6
_ROW = re.compile(r"^  ([* ])  (\S+)\s+(\S+) \((\d)\)\s+(\S+) \((\d)\)\s+(\S+)\s+(\S+)\s+(\S+)$")


def _cli(*args, cwd, env=None):
    return subprocess.run(
        [sys.executable, "-m", "softpool_nd", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env=None if env is None else {**os.environ, **env},
    )


def _parse_table(text):
    """{kernel: [(marked, method, psnr, psnr_rank, ssim, ssim_rank, [mad...])]} from a demo table."""
    tables, kernel = {}, None
    for line in text.splitlines():
        head = re.match(r"^kernel (\d+): ", line)
        if head:
            kernel = int(head.group(1))
            tables[kernel] = []
        m = _ROW.match(line)
        if m:
            mads = [math.nan if v == "-" else float(v) for v in m.group(7, 8, 9)]
            tables[kernel].append(
                (
                    m.group(1) == "*",
                    m.group(2),
                    float(m.group(3)),
                    int(m.group(4)),
                    float(m.group(5)),
                    int(m.group(6)),
                    mads,
                )
            )
    return tables


def _check_ranked(rows):
    """Every number finite, and rank 1 = highest, as competition ranks of the printed values."""
    for col in (2, 4):
        values = [r[col] for r in rows]
        assert all(math.isfinite(v) for v in values)
        for r in rows:
            assert r[col + 1] == 1 + sum(v > r[col] for v in values)
    for i, r in enumerate(rows):
        assert math.isnan(r[6][i])
        assert all(math.isfinite(v) and v > 0 for j, v in enumerate(r[6]) if j != i)


def _panels(png, rows, cols, panel):
    """Cut the figure into its panel images (without labels)."""
    a = np.asarray(png.convert("RGB"))
    out = []
    for r in range(rows):
        top = _GAP + r * (panel + _LABEL + _GAP) + _LABEL
        out.append([a[top : top + panel, _GAP + c * (panel + _GAP) :][:, :panel] for c in range(cols)])
    return out


def _gray_png(path, size=64, seed=0):
    rng = np.random.default_rng(seed)
    # blocks of noise plus a bright diagonal, so the three poolings disagree
    img = (rng.random((size, size)) * 120).astype(np.uint8)
    np.fill_diagonal(img, 255)
    Image.fromarray(img).save(path)
    return img.astype(np.float64) / 255.0


# --- subprocess: the commands as a user runs them -------------------------------------------------


@pytest.mark.parametrize("command", [[], ["info"], ["demo"], ["bench"]])
def test_help_of_every_command(tmp_path, command):
    res = _cli(*command, "--help", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith(f"usage: softpool-nd {command[0] if command else ''}".rstrip())
    assert "Traceback" not in res.stderr


def test_console_script_is_main_and_version_flag(tmp_path):
    from importlib.metadata import entry_points

    (ep,) = entry_points(group="console_scripts", name="softpool-nd")
    assert ep.load() is main
    res = _cli("--version", cwd=tmp_path)
    assert (res.returncode, res.stdout) == (0, f"softpool-nd {softpool_nd.__version__}\n")


def test_info_lists_versions_backends_and_cache(tmp_path):
    import numba

    res = _cli("info", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert out.startswith(f"softpool_nd {softpool_nd.__version__} ")
    assert re.search(rf"^  numpy\s+{re.escape(np.__version__)}$", out, re.M)
    assert re.search(rf"^  numba\s+{re.escape(numba.__version__)}$", out, re.M)
    assert "CPU (numba): works;" in out
    assert re.search(r"^  GPU \(cupy\): ", out, re.M)
    cache = out.split("numba cache:\n", 1)[1].strip()
    assert os.path.isabs(cache.split(" (")[0])


def test_info_names_the_folder_numba_caches_the_kernels_in(tmp_path):
    # with NUMBA_CACHE_DIR set, numba writes into a subfolder of it: info must
    # report that one (its own probe call has just left kernels there)
    res = _cli("info", cwd=tmp_path, env={"NUMBA_CACHE_DIR": str(tmp_path / "nc")})
    assert res.returncode == 0, res.stderr
    cache = res.stdout.split("numba cache:\n", 1)[1].strip()
    assert cache.startswith(str(tmp_path / "nc")), cache
    assert int(re.search(r"(\d+) cached files", cache).group(1)) > 0, cache


def test_default_demo_writes_figure_and_table(tmp_path):
    res = _cli("demo", "--out", "out", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    png = Image.open(tmp_path / "out" / "softpool_demo.png")
    # 256x256 scene, kernels 2 and 4: two rows of original | SoftPool | average | max
    assert png.size == (4 * 256 + 5 * _GAP, 2 * (256 + _LABEL) + 3 * _GAP)
    panels = _panels(png, 2, 4, 256)
    expected = np.clip(np.rint(still() * 255), 0, 255).astype(np.uint8)
    for row in panels:
        np.testing.assert_array_equal(row[0], expected)
        for i in range(4):
            for j in range(i + 1, 4):
                assert np.abs(row[i].astype(int) - row[j].astype(int)).mean() > 1.0

    tables = _parse_table(res.stdout)
    assert sorted(tables) == [2, 4]
    ref = {r.kernel: r for r in cli_demo.compare(still(), [2, 4], (0, 1))}
    for k, rows in tables.items():
        assert [r[1] for r in rows] == ["SoftPool", "average", "max"]
        assert [r[0] for r in rows] == [True, False, False]
        _check_ranked(rows)
        for r in rows:
            m = ref[k].method(r[1])
            assert r[2] == pytest.approx(m.psnr, abs=0.006)
            assert r[4] == pytest.approx(m.ssim, abs=6e-5)


def test_demo_on_a_user_image_pools_what_softpool_pools(tmp_path):
    x = _gray_png(tmp_path / "in.png")
    res = _cli("demo", "--image", "in.png", "--kernel", "4", "2", "--out", ".", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "in.png, 64x64 grayscale" in res.stdout
    png = Image.open(tmp_path / "softpool_demo.png")
    panel = 3 * 64  # small images are zoomed by an integer factor to at least 180 px
    assert png.size == (4 * panel + 5 * _GAP, 2 * (panel + _LABEL) + 3 * _GAP)
    for row, k in zip(_panels(png, 2, 4, panel), (2, 4)):
        shown = {}
        for name, pooled in (
            ("SoftPool", softpool_nd.pool(x, kernel=k)),
            ("average", avg_pool(x, k, (0, 1))),
            ("max", max_pool(x, k, (0, 1))),
        ):
            restored = upsample_nearest(upsample_nearest(pooled, k, (0, 1)), 3, (0, 1))
            shown[name] = np.rint(np.clip(restored, 0, 1) * 255).astype(np.uint8)
        for col, name in enumerate(("SoftPool", "average", "max"), start=1):
            np.testing.assert_array_equal(row[col][..., 0], shown[name])
    for rows in _parse_table(res.stdout).values():
        _check_ranked(rows)


@pytest.mark.parametrize(
    "setup, args, message",
    [
        (None, ["--image", "missing.png"], "no such file: missing.png"),
        ("garbage", ["--image", "bad.png"], "cannot read bad.png as an image"),
        (
            "image",
            ["--image", "in.png", "--kernel", "65"],
            "kernel 65 is larger than the image (64x64); use --kernel at most 64",
        ),
    ],
)
def test_demo_failures_exit_1_with_one_line(tmp_path, setup, args, message):
    if setup == "garbage":
        (tmp_path / "bad.png").write_bytes(b"this is not a PNG")
    elif setup == "image":
        _gray_png(tmp_path / "in.png")
    res = _cli("demo", *args, cwd=tmp_path)
    assert res.returncode == 1
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("softpool-nd demo: error: ")
    assert message in res.stderr
    assert not (tmp_path / "softpool_demo.png").exists()


@pytest.mark.parametrize("args", [["demo", "--kernel", "0"], ["demo", "--beta", "inf"], ["frobnicate"], []])
def test_usage_errors_exit_2(tmp_path, args):
    res = _cli(*args, cwd=tmp_path)
    assert res.returncode == 2
    assert "usage: softpool-nd" in res.stderr and "Traceback" not in res.stderr


# --- in-process: paths a subprocess cannot reach cheaply -----------------------------------------


def test_demo_video_writes_gif_and_3d_table(tmp_path, capsys):
    _gray_png(tmp_path / "in.png", size=32)
    assert main(["demo", "--video", "--image", str(tmp_path / "in.png"), "--kernel", "2", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "16x96x96 (time x height x width)" in out
    assert "kernel 2: 16x96x96 -> 8x48x48" in out
    video_rows = _parse_table(out.split("3-D:", 1)[1])[2]
    _check_ranked(video_rows)
    gif = Image.open(tmp_path / "softpool_demo_video.gif")
    assert gif.n_frames == 16
    assert gif.size == (4 * 192 + 5 * _GAP, 192 + _LABEL + 2 * _GAP)
    frames = []
    for t in (0, 8):
        gif.seek(t)
        frames.append(np.asarray(gif.convert("L"), dtype=int))
    assert np.abs(frames[0] - frames[1]).mean() > 1.0


def test_video_kernel_too_large_fails_before_writing(tmp_path, capsys):
    assert main(["demo", "--video", "--kernel", "17", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "kernel 17 is larger than the video (16x96x96)" in err
    assert list(tmp_path.iterdir()) == []


def test_missing_pillow_names_the_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "PIL.Image", None)
    assert main(["demo", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "pip install 'softpool_nd[demo]'" in err
    assert main(["info"]) == 0


def _fake_module(monkeypatch, name, calls, table):
    mod = types.ModuleType(name)

    def run(quick=False):
        calls.append((name, quick))
        print(table)
        return table

    mod.run = run
    mod.use_passive_wait_policy = lambda: None  # the real one sets the CLI process's own environment
    monkeypatch.setitem(sys.modules, name, mod)


def test_importing_the_package_and_its_bench_module_leaves_the_environment_alone():
    code = (
        "import os; before = dict(os.environ); import softpool_nd, softpool_nd.bench, softpool_nd.cli.bench; "
        "print(dict(os.environ) == before, 'OMP_WAIT_POLICY' in os.environ)"
    )
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.split() == ["True", "False"]


def test_bench_timers_run_numba_on_the_threading_layer_users_get():
    """The timers set numba's thread count before anything else: that must not start numba's own first
    choice of layer (OpenMP) where a program importing softpool_nd runs on the one softpool_nd.cpu chooses."""

    def layer(code):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        return out.stdout.strip()

    timed = layer(
        "from softpool_nd.bench import _set_threads; _set_threads(1); import numba; print(numba.threading_layer())"
    )
    assert timed == layer("import softpool_nd.cpu, numba; print(numba.threading_layer())")


def test_bench_module_holds_measurements_and_benchmarks_hold_the_targets():
    import softpool_nd.bench as bench

    assert not hasattr(bench, "TRAINING_TARGETS") and "target" not in bench.run.__doc__.lower()
    compare = pytest.importorskip("benchmarks.compare")
    row = bench.Row("forward_speedup[0]", "x", 7.9, "7.9x")
    assert compare._line(row).endswith("| >= 8x | NO |")
    assert compare._line(bench.Row("training_compiled[1]", "x", 1.6, "1.6x")).endswith("| >= 1.5x | yes |")
    assert compare.timeit_interleaved is bench.timeit_interleaved and compare.training_steps is bench.training_steps


def test_bench_runs_cpu_table_and_says_why_no_gpu(monkeypatch, capsys):
    calls = []
    _fake_module(monkeypatch, "softpool_nd.bench", calls, "CPU TABLE")
    monkeypatch.setattr(cli_bench, "cuda_devices", lambda: ([], "CuPy sees no CUDA device"))
    assert main(["bench", "--quick"]) == 0
    assert calls == [("softpool_nd.bench", True)]
    out = capsys.readouterr().out
    assert out.splitlines() == ["CPU TABLE", "GPU comparison skipped: CuPy sees no CUDA device."]


def test_bench_runs_gpu_table_when_a_gpu_is_present(monkeypatch, capsys):
    calls = []
    _fake_module(monkeypatch, "softpool_nd.bench", calls, "CPU TABLE")
    _fake_module(monkeypatch, "softpool_nd.gpu.check", calls, "GPU TABLE")
    monkeypatch.setattr(cli_bench, "cuda_devices", lambda: ([("Fake GPU", 80 * 2**30)], None))
    assert main(["bench"]) == 0
    assert calls == [("softpool_nd.bench", False), ("softpool_nd.gpu.check", False)]
    assert capsys.readouterr().out.splitlines() == ["CPU TABLE", "GPU: Fake GPU", "GPU TABLE"]


def test_bench_without_benchmark_module_fails_clearly(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "softpool_nd.bench", None)
    monkeypatch.setattr(cli_bench, "cuda_devices", lambda: ([], "CuPy sees no CUDA device"))
    assert main(["bench"]) == 1
    captured = capsys.readouterr()
    assert captured.out == "GPU comparison skipped: CuPy sees no CUDA device.\n"
    assert captured.err == (
        "softpool-nd bench: error: this installation of softpool_nd has no CPU benchmark "
        "(softpool_nd.bench is missing)\n"
    )


def test_bench_still_runs_gpu_check_without_cpu_module_and_fails_on_fail_rows(monkeypatch, capsys):
    calls = []
    monkeypatch.setitem(sys.modules, "softpool_nd.bench", None)
    _fake_module(monkeypatch, "softpool_nd.gpu.check", calls, "fwd  0.41 of copy  FAIL")
    monkeypatch.setattr(cli_bench, "cuda_devices", lambda: ([("Fake GPU", 80 * 2**30)], None))
    assert main(["bench", "--quick"]) == 1
    assert calls == [("softpool_nd.gpu.check", True)]
    captured = capsys.readouterr()
    assert "rows marked FAIL" in captured.out
    assert "no CPU benchmark" in captured.err


def test_bench_gpu_check_fail_rows_exit_1(monkeypatch, capsys):
    calls = []
    _fake_module(monkeypatch, "softpool_nd.bench", calls, "CPU TABLE")
    _fake_module(monkeypatch, "softpool_nd.gpu.check", calls, "fwd  0.41 of copy  FAIL")
    monkeypatch.setattr(cli_bench, "cuda_devices", lambda: ([("Fake GPU", 80 * 2**30)], None))
    assert main(["bench"]) == 1
    assert capsys.readouterr().out.splitlines()[-1].startswith("GPU check: rows marked FAIL")


# --- the numbers behind the table -----------------------------------------------------------------


def _ssim_direct(x, y):
    """Wang et al. SSIM by explicit 11x11 Gaussian-weighted sums at every valid window position."""
    r = np.arange(11) - 5.0
    g = np.exp(-(r**2) / (2 * 1.5**2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = 0.01**2, 0.03**2
    vals = []
    for i in range(x.shape[0] - 10):
        for j in range(x.shape[1] - 10):
            a, b = x[i : i + 11, j : j + 11], y[i : i + 11, j : j + 11]
            ma, mb = (w * a).sum(), (w * b).sum()
            va, vb = (w * (a - ma) ** 2).sum(), (w * (b - mb) ** 2).sum()
            cov = (w * (a - ma) * (b - mb)).sum()
            vals.append((2 * ma * mb + c1) * (2 * cov + c2) / ((ma**2 + mb**2 + c1) * (va + vb + c2)))
    return float(np.mean(vals))


def test_ssim_matches_direct_windowed_sums():
    rng = np.random.default_rng(7)
    x = rng.random((17, 15, 2))
    y = np.clip(x + 0.2 * rng.standard_normal(x.shape), 0, 1)
    expected = np.mean([_ssim_direct(x[..., c], y[..., c]) for c in range(2)])
    assert ssim(x, y) == pytest.approx(expected, rel=1e-12)
    assert ssim(x, x) == pytest.approx(1.0, abs=1e-15)


def test_psnr_mad_and_baseline_pools():
    x = np.arange(24, dtype=np.float64).reshape(4, 6) / 23.0
    assert psnr(x, x + 0.01) == pytest.approx(40.0)
    assert mean_abs_diff(x, x[::-1]) == pytest.approx(np.abs(x - x[::-1]).mean())
    blocks = x.reshape(2, 2, 3, 2).transpose(0, 2, 1, 3).reshape(2, 3, 4)
    np.testing.assert_allclose(avg_pool(x, 2, (0, 1)), blocks.mean(-1), rtol=1e-15)
    np.testing.assert_array_equal(max_pool(x, 2, (0, 1)), blocks.max(-1))
    # a colour image pools each channel separately and keeps the channel axis
    rgb = np.stack([x, 1 - x, x * 0.5], axis=-1)
    np.testing.assert_array_equal(max_pool(rgb, 2, (0, 1))[..., 1], max_pool(1 - x, 2, (0, 1)))
    up = upsample_nearest(max_pool(x, 2, (0, 1)), 2, (0, 1))
    assert up.shape == x.shape
    for di in (0, 1):
        for dj in (0, 1):
            np.testing.assert_array_equal(up[di::2, dj::2], blocks.max(-1))


def test_ssim_in_row_bands_equals_whole_image(monkeypatch):
    from softpool_nd.cli import metrics

    rng = np.random.default_rng(3)
    x, y = rng.random((40, 23, 3)), rng.random((40, 23, 3))
    whole = ssim(x, y)
    monkeypatch.setattr(metrics, "_BAND_ELEMENTS", 3 * 23 * 4)  # 4 output rows per band, last band shorter
    assert ssim(x, y) == pytest.approx(whole, rel=1e-13)
    assert ssim(x[..., 0], y[..., 0]) == pytest.approx(_ssim_direct(x[..., 0], y[..., 0]), rel=1e-12)


def test_timeit_interleaved_runs_before_ahead_of_every_timed_call_untimed():
    from softpool_nd import bench

    log = []
    t = bench.timeit_interleaved(
        {"a": lambda: log.append("a"), "b": lambda: log.append("b")}, rounds=3, before=lambda: log.append("-")
    )
    # one untimed warm-up call each, then every timed call right after a call of before
    assert log == ["a", "b"] + ["-", "a", "-", "b"] * 3 and set(t) == {"a", "b"}


def test_training_rows_by_default_get_the_callers_wait_policy(monkeypatch):
    # the fresh process of the training rows gets the policy the caller had before use_passive_wait_policy
    from softpool_nd import bench

    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    monkeypatch.setattr(bench, "_PASSIVE_SET", [True])
    monkeypatch.setattr(bench, "CALLER_WAIT_POLICY", None)
    assert "OMP_WAIT_POLICY" not in bench._caller_env()
    monkeypatch.setattr(bench, "CALLER_WAIT_POLICY", "ACTIVE")
    assert bench._caller_env()["OMP_WAIT_POLICY"] == "ACTIVE"
    monkeypatch.setattr(bench, "_PASSIVE_SET", [])  # the caller chose PASSIVE itself: kept
    assert bench._caller_env()["OMP_WAIT_POLICY"] == "PASSIVE"
