"""The main example, `python -m hamux_lagr.demo`, run as a user runs it."""

import importlib.util
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest


MISSING = [
    name
    for name in ("sklearn", "matplotlib", "tqdm")
    if importlib.util.find_spec(name) is None
]
needs_examples = pytest.mark.skipif(
    bool(MISSING), reason=f"needs {', '.join(MISSING)} (the [examples] extra)"
)
ROW = re.compile(
    r"^(half-masked|30% noise)\s+(\S+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+[\d.]+s$"
)


def run_demo(*args: str, tmp_path: pathlib.Path) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("JAX_ENABLE_X64", None)  # the user's default: float32
    return subprocess.run(
        [sys.executable, "-m", "hamux_lagr.demo", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def parse_table(stdout: str) -> dict[tuple[str, str], dict[str, float]]:
    rows = {}
    for line in stdout.splitlines():
        match = ROW.match(line.strip())
        if match:
            kind, memory, *numbers = match.groups()
            keys = ("exact", "class", "pixel_error", "nn_exact", "nn_class")
            rows[(kind, memory)] = dict(zip(keys, map(float, numbers)))
    return rows


def test_help(tmp_path):
    result = run_demo("--help", tmp_path=tmp_path)
    assert result.returncode == 0
    for option in (
        "--beta",
        "--n",
        "--steps",
        "--dt",
        "--lagrangian",
        "--sparse-beta",
        "--l2-beta",
        "--output",
        "--quick",
    ):
        assert option in result.stdout
    assert "30% of pixels" in result.stdout  # argparse shows the text as written
    assert "%%" not in result.stdout


@needs_examples
def test_quick_run_prints_the_table_and_writes_the_figure(tmp_path):
    # A name without an extension, in a directory that does not exist yet.
    result = run_demo("--quick", "--output", "figure/demo", tmp_path=tmp_path)
    output = tmp_path / "figure" / "demo.png"
    assert result.returncode == 0, result.stderr
    rows = parse_table(result.stdout)
    memories = [
        "LSoftmax(beta=10)",
        "LSoftmax(beta=100)",
        "LRepu(n=20)",
        "LSparsemax(beta=100)",
        "LEntmax(alpha=1.5,beta=100)",
        "LSoftmax(beta=100)/l2",
    ]
    assert set(rows) == {(k, m) for k in ("half-masked", "30% noise") for m in memories}
    for row in rows.values():
        for key in ("exact", "class", "nn_exact", "nn_class"):
            assert 0.0 <= row[key] <= 1.0
    # The sparse memories read the nearest stored digit: at the ceiling.
    for kind in ("half-masked", "30% noise"):
        for memory in ("LSparsemax(beta=100)", "LEntmax(alpha=1.5,beta=100)"):
            row = rows[(kind, memory)]
            assert row["exact"] == row["nn_exact"] and row["class"] == row["nn_class"]
    # With the distance similarity the noisy digits are read at the ceiling too; a
    # masked half counts as evidence without the confidence channel.
    noisy_l2 = rows[("30% noise", "LSoftmax(beta=100)/l2")]
    assert noisy_l2["exact"] >= noisy_l2["nn_exact"] - 0.03
    assert rows[("half-masked", "LSoftmax(beta=100)/l2")]["exact"] < 0.5
    # Even on 200 queries and 5 steps the best memory inpaints and denoises.
    best_masked = rows[("half-masked", "LSoftmax(beta=100)")]
    best_noisy = rows[("30% noise", "LSoftmax(beta=100)")]
    assert best_masked["exact"] >= 0.95 and best_masked["class"] >= 0.95
    assert best_noisy["class"] >= 0.9
    assert best_noisy["exact"] >= best_noisy["nn_exact"] - 0.03
    assert output.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"Wrote the figure to {output.resolve()} " in result.stdout
    assert sorted(p.name for p in (tmp_path / "figure").iterdir()) == ["demo.png"]
    assert "warning" not in result.stdout


@needs_examples
def test_full_run_meets_the_targets(tmp_path):
    # What the demo shows, with the best listed memory, on all 1797 digits and the
    # default steps: class recall >= 93% for both corruptions, exact recall within 2
    # points of the nearest-neighbour ceiling for noise, >= 95% exact when half-masked.
    result = run_demo(
        "--lagrangian",
        "softmax",
        "--beta",
        "100",
        "--output",
        "d.png",
        tmp_path=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    rows = parse_table(result.stdout)
    masked = rows[("half-masked", "LSoftmax(beta=100)")]
    noisy = rows[("30% noise", "LSoftmax(beta=100)")]
    assert masked["class"] >= 0.93 and noisy["class"] >= 0.93
    assert noisy["exact"] >= noisy["nn_exact"] - 0.02
    assert masked["exact"] >= 0.95
    assert "Stored 1797 digits; recalled 1797" in result.stdout


def test_bad_arguments_are_usage_errors(tmp_path):
    # As the user sees it: argparse's exit status 2 and our message on stderr.
    result = run_demo("--beta", "-1", tmp_path=tmp_path)
    assert result.returncode == 2
    assert "`--beta` must be positive and finite" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--beta", "nan"], "`--beta` must be positive and finite, got [nan]"),
        (
            ["--beta", "10", "inf"],
            "`--beta` must be positive and finite, got [10.0, inf]",
        ),
        (["--beta", "0"], "`--beta` must be positive and finite"),
        (["--sparse-beta", "0"], "`--sparse-beta` must be positive and finite"),
        (["--l2-beta", "nan"], "`--l2-beta` must be positive and finite, got [nan]"),
        (["--n", "0.5"], "`--n` must be finite and >= 1"),
        (["--n", "inf"], "`--n` must be finite and >= 1"),
        (["--n", "nan"], "`--n` must be finite and >= 1"),
        (["--dt", "nan"], "`--dt` must be positive and finite, got nan"),
        (["--dt", "inf"], "`--dt` must be positive and finite, got inf"),
        (["--dt", "0"], "`--dt` must be positive and finite, got 0.0"),
        (["--steps", "-1"], "`--steps` must be >= 0"),
        (["--queries", "0"], "`--queries` must be >= 1"),
        (["--output", "figure.v2"], "`--output` must be a directory or a file ending"),
        (["--output", "a_file/demo.png"], "'a_file' is not a directory"),
    ],
)
def test_bad_arguments_stop_before_any_work(
    args, message, tmp_path, monkeypatch, capsys
):
    from hamux_lagr.demo import __main__ as cli

    monkeypatch.chdir(tmp_path)
    (tmp_path / "a_file").write_text("")

    def no_work(**kwargs):
        raise AssertionError("the demo started working on bad arguments")

    monkeypatch.setattr(cli, "run", no_work)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(args)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]  # nothing written


@pytest.mark.skipif(
    os.name != "posix" or os.geteuid() == 0, reason="root writes anywhere"
)
def test_unwritable_output_directory_is_a_usage_error(tmp_path, capsys):
    from hamux_lagr.demo import __main__ as cli

    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(SystemExit) as exit_info:
            cli.parse_args(["--output", str(locked / "demo.png")])
    finally:
        locked.chmod(0o700)
    assert exit_info.value.code == 2
    assert "cannot be written" in capsys.readouterr().err


def test_output_names_the_file_actually_written(tmp_path, monkeypatch):
    from hamux_lagr.demo import __main__ as cli

    monkeypatch.chdir(tmp_path)
    (tmp_path / "figures").mkdir()
    cases = {
        "figures": tmp_path / "figures" / "hamux_lagr_demo.png",  # a directory
        "new_dir/": tmp_path / "new_dir" / "hamux_lagr_demo.png",
        "result": tmp_path / "result.png",  # no extension
        "out/result.pdf": tmp_path / "out" / "result.pdf",
        "result.PNG": tmp_path / "result.PNG",
    }
    for given, written in cases.items():
        output = cli.parse_args(["--output", given]).output
        assert output.resolve() == written, given
        assert not written.exists()  # checked for writing, not left behind
    assert cli.parse_args([]).output == pathlib.Path("hamux_lagr_demo.png")


@needs_examples
def test_figure_labels_the_energy_axes_and_the_read_step():
    from hamux_lagr import demo

    rng = np.random.default_rng(0)
    images = rng.random((20, 64)).astype(np.float32)
    labels = np.arange(20) % 10
    targets = np.arange(20)
    queries = {kind: images for kind in demo.CORRUPTIONS}
    known = {kind: np.ones_like(images, bool) for kind in demo.CORRUPTIONS}
    energies = np.cumsum(-rng.random((20, 6)), axis=1)
    recalls = [
        demo.Recall(memory, kind, images, energies, 0.0)
        for kind in demo.CORRUPTIONS
        for memory in ("LSoftmax(beta=10)", "LRepu(n=20)")
    ]
    rows = [dict(corruption=r.corruption, exact=1.0) for r in recalls]
    extra = dict(
        images=images,
        labels=labels,
        targets=targets,
        queries=queries,
        known=known,
        recalls=recalls,
    )
    fig = demo.draw_figure(rows, extra)
    curves = [ax for ax in fig.axes if ax.get_lines() and ax.get_legend()]
    assert len(curves) == len(demo.CORRUPTIONS)
    for ax in curves:
        assert ax.get_ylabel() == "mean $E(t) - E(T)$"
        assert "LSoftmax: 1 = the read step, dt = 1" in ax.get_xlabel()
        marks = [line for line in ax.get_lines() if list(line.get_xdata()) == [1, 1]]
        assert len(marks) == 1  # a vertical line at step 1
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_missing_extra_names_it(monkeypatch, tmp_path):
    from hamux_lagr.demo import __main__ as cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "sklearn", None)  # `import sklearn` now fails
    with pytest.raises(SystemExit, match=r"\[examples\]"):
        cli.main(["--quick"])


@needs_examples
def test_corruptions():
    from hamux_lagr import demo

    images = np.random.default_rng(0).random((50, 64)).astype(np.float32)
    queries, known, hold = demo.corrupt(images, "half-masked", np.random.default_rng(1))
    assert hold and known.shape == images.shape
    assert known[:, :32].all() and not known[:, 32:].any()  # lower four rows unknown
    assert np.array_equal(queries[:, :32], images[:, :32]) and not queries[:, 32:].any()

    queries, known, hold = demo.corrupt(images, "30% noise", np.random.default_rng(1))
    assert not hold and known.all()
    changed = np.mean(queries != images)
    assert 0.25 < changed < 0.35
    assert queries.min() >= 0.0 and queries.max() <= 1.0
    with pytest.raises(ValueError, match="`kind`"):
        demo.corrupt(images, "blur", np.random.default_rng(1))


def test_nearest_uses_known_pixels_only():
    from hamux_lagr import demo

    patterns = np.array([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.5, 0.5]], np.float32)
    # The unknown pixels of a query are zeros: over all pixels pattern 1 is nearer,
    # over the known ones pattern 0 matches exactly.
    query = np.array([[0.0, 0.0, 1.0, 1.0]], np.float32)
    assert demo.nearest(query, patterns)[0] == 1
    known = np.array([[False, False, True, True]])
    assert demo.nearest(query, patterns, known)[0] == 0
    # Each query has its own mask.
    queries = np.array([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 0.5, 0.5]], np.float32)
    masks = np.array([[False, False, True, True], [True, True, False, False]])
    assert list(demo.nearest(queries, patterns, masks)) == [0, 1]
    assert list(demo.nearest(queries, patterns, masks[::-1])) == [1, 1]
    # Over the known pixels both patterns match; the first wins the tie.
    tie = np.array([[True, False, False, False]])
    assert (
        demo.nearest(np.array([[0.5, 9.0, 9.0, 9.0]], np.float32), patterns, tie)[0]
        == 0
    )


@needs_examples
@pytest.mark.parametrize("family", ["sparsemax", "entmax"])
def test_sparse_memory_recalls_clean_patterns_exactly(family):
    # Every stored digit, queried as it is, is read back exactly: one weight is left.
    from hamux_lagr import demo

    images, _ = demo.load_data()
    images = images[:300]
    ham = demo.euclidean_memory(images, demo.sparse_lagrangian(family, 100.0))
    known = np.ones(images.shape, bool)
    recalled, energies = demo.recall_softmax(ham, images, known, False, steps=0, dt=0.1)
    assert np.array_equal(recalled, images)
    assert energies.shape == (len(images), 2)  # the query, then the read
    assert np.all(energies[:, 1] <= energies[:, 0] + 1e-5)


@needs_examples
def test_l2_memory_reads_the_weighted_patterns_and_descends():
    # The read step of the distance memory is x = Xi^T softmax(-beta/2 |x - xi|^2),
    # and the energy never rises along the descent; clamped pixels stay put.
    from hamux_lagr import demo

    images, _ = demo.load_data()
    images, queries = images[:200], images[200:240]
    memory = demo.l2_memory(images, 10.0)
    known = np.zeros(queries.shape, bool)
    read, energies = demo.recall_l2(memory, queries, known, False, steps=0, dt=0.1)
    d2 = ((queries[:, None] - images[None]) ** 2).sum(-1)
    logits = -5.0 * d2
    w = np.exp(logits - logits.max(1, keepdims=True))
    expected = (w / w.sum(1, keepdims=True)) @ images
    np.testing.assert_allclose(read, expected, rtol=1e-4, atol=1e-5)
    assert energies.shape == (len(queries), 2)

    known[:, :32] = True
    final, energies = demo.recall_l2(memory, queries, known, True, steps=5, dt=0.1)
    assert np.array_equal(final[:, :32], queries[:, :32])
    assert energies.shape == (len(queries), 7)
    assert np.all(np.diff(energies, axis=1) <= 1e-5)
