"""Export to ONNX (`to_onnx`, run in onnxruntime) and to StableHLO (`to_jax_export`):
every Lagrangian and every synapse exports to a model that equals JAX on random
inputs, loops keep their stop rule, and what cannot be exported says so."""

import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import run_without_hook, tree_allclose

import hamux_lagr as hl


# Without the `export` extra these tests are skipped, except in CI (`CI` set), where
# the imports below fail.
if not os.environ.get("CI"):
    for _module in ("jax2onnx", "onnx", "onnxruntime"):
        pytest.importorskip(_module, reason="needs `pip install -e '.[export]'`")

import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402


F32 = jnp.float32
BATCH = 2
STEPS = 3
DT = 0.1


def run_onnx(model, *inputs) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.log_severity_level = 3  # onnxruntime's notes on unused initialisers
    session = ort.InferenceSession(model.SerializeToString(), options)
    names = [i.name for i in session.get_inputs()]
    return session.run(None, {n: np.asarray(x) for n, x in zip(names, inputs)})


def relative_error(out, ref) -> float:
    """max |out - ref| relative to max |ref| (the array's scale)."""
    out, ref = np.asarray(out, np.float64), np.asarray(ref, np.float64)
    assert out.shape == ref.shape and np.all(np.isfinite(ref))
    return float(np.max(np.abs(out - ref)) / max(np.max(np.abs(ref)), 1.0e-30))


def array(rng, *shape, scale=1.0):
    return jnp.asarray(scale * rng.standard_normal(shape), F32)


LAGRANGIANS = {
    "LIdentity": lambda: hl.LIdentity(),
    "LRelu": lambda: hl.LRelu(),
    "LRepu": lambda: hl.LRepu(n=3.0),
    "LSigmoid": lambda: hl.LSigmoid(beta=2.0, scale=1.5),
    "LTanh": lambda: hl.LTanh(beta=2.0),
    "LExp": lambda: hl.LExp(beta=0.5),
    "LRexp": lambda: hl.LRexp(beta=0.5),
    "LSoftmax": lambda: hl.LSoftmax(beta=2.0),
    "LSoftmaxUnstable": lambda: hl.LSoftmaxUnstable(beta=2.0),
    "LGhostmax": lambda: hl.LGhostmax(beta=2.0),
    "LLayerNorm": lambda: hl.LLayerNorm(gamma=1.5, delta=0.1),
    "LSphericalNorm": lambda: hl.LSphericalNorm(gamma=1.5, delta=0.1),
    "LSparsemax": lambda: hl.LSparsemax(beta=2.0),
    "LEntmax": lambda: hl.LEntmax(alpha=1.5, beta=2.0),
    "LNormmax": lambda: hl.LNormmax(alpha=2.0, beta=2.0),
    "LLogSumReLU": lambda: hl.LLogSumReLU(beta=2.0),
}


def lagrangian_parts(name: str, rng):
    """The Lagrangian in both of its roles: a layer's, and a memory's."""
    lagr = LAGRANGIANS[name]()
    layers = {"v": (lagr, (6,))}
    return layers, hl.DenseMemory(array(rng, 4, 6, scale=0.5), lagr), ("v",)


def synapse_parts(name: str, rng):
    tanh, ident = hl.LTanh(), hl.LIdentity()
    if name == "LinearSynapse":
        syn = hl.LinearSynapse(array(rng, 6, 4), array(rng, 4))
        return {"v": (tanh, (6,)), "h": (hl.LRelu(), (4,))}, syn, ("v", "h")
    if name == "BiasSynapse":
        return {"v": (tanh, (6,))}, hl.BiasSynapse(array(rng, 6)), ("v",)
    if name == "ConvSynapse":
        syn = hl.ConvSynapse(
            array(rng, 2, 1, 3, 3, scale=0.3), array(rng, 2), padding=1
        )
        layers = {"img": (tanh, (1, 5, 5)), "feat": (hl.LRelu(), (2, 5, 5))}
        return layers, syn, ("img", "feat")
    if name.startswith("PoolSynapse"):
        mode = name.split("-")[1]
        if mode == "conv":
            conv = hl.ConvSynapse(array(rng, 2, 1, 3, 3, scale=0.3))
            syn = hl.PoolSynapse(2, conv=conv)  # 8x8, convolved to 6x6, pooled by 2
            layers = {"img": (tanh, (1, 8, 8)), "pool": (ident, (2, 3, 3))}
        else:
            syn = hl.PoolSynapse(2, mode=mode)
            layers = {"img": (tanh, (2, 8, 8)), "pool": (ident, (2, 4, 4))}
        return layers, syn, ("img", "pool")
    if name.startswith("DenseMemory"):
        similarity = name.split("-")[1]
        syn = hl.DenseMemory(array(rng, 5, 6), hl.LSoftmax(2.0), similarity=similarity)
        return {"v": (ident, (6,))}, syn, ("v",)
    if name == "AttentionSynapse":
        syn = hl.AttentionSynapse(array(rng, 2, 3, 4), array(rng, 2, 3, 4))
        return {"tokens": (hl.LLayerNorm(), (3, 4))}, syn, ("tokens",)
    if name == "RandomFeatureMemory":
        patterns = array(rng, 5, 6, scale=0.3)
        syn = hl.RandomFeatureMemory.from_patterns(
            patterns, 1.0, 16, key=jax.random.key(0)
        )
        return {"v": (ident, (6,))}, syn, ("v",)
    raise AssertionError(name)


SYNAPSES = [
    "LinearSynapse",
    "BiasSynapse",
    "ConvSynapse",
    "PoolSynapse-max",
    "PoolSynapse-avg",
    "PoolSynapse-conv",
    "DenseMemory-dot",
    "DenseMemory-l2",
    "AttentionSynapse",
    "RandomFeatureMemory",
]


def exported_pieces(names, parts) -> dict[str, list[tuple[np.ndarray, jax.Array]]]:
    """One HAM holding every piece (each with layers of its own), a few Euler steps
    of a batch exported once and run in onnxruntime: for each piece, its layers'
    (onnxruntime, JAX) final states."""
    rng = np.random.default_rng(0)
    neurons, synapses, connections, owner = {}, {}, [], {}
    for name in names:
        layers, synapse, connected = parts(name, rng)
        for layer, (lagr, shape) in layers.items():
            neurons[f"{name}/{layer}"] = hl.NeuronLayer(lagr, shape)
            owner[f"{name}/{layer}"] = name
        synapses[name] = synapse
        connections.append((tuple(f"{name}/{layer}" for layer in connected), name))
    ham = hl.HAM(neurons=neurons, synapses=synapses, connections=connections)
    layer_names = sorted(neurons)

    def recall(*states):
        sol = hl.descend(
            ham, dict(zip(layer_names, states)), steps=STEPS, dt=DT, throw=False
        )
        return [sol.xs[n] for n in layer_names]

    batched = jax.vmap(recall)
    inputs = [array(rng, BATCH, *neurons[n].shape) for n in layer_names]
    outs = run_onnx(hl.to_onnx(batched, *inputs), *inputs)
    refs = batched(*inputs)
    results: dict = {name: [] for name in names}
    for layer, out, ref in zip(layer_names, outs, refs):
        results[owner[layer]].append((out, ref))
    return results


@pytest.fixture(scope="module")
def lagrangian_exports():
    return exported_pieces(sorted(LAGRANGIANS), lagrangian_parts)


@pytest.fixture(scope="module")
def synapse_exports():
    return exported_pieces(SYNAPSES, synapse_parts)


def check_piece(results):
    for out, ref in results:
        assert out.dtype == np.float32
        assert relative_error(out, ref) <= 1e-5


@pytest.mark.parametrize("name", sorted(LAGRANGIANS))
def test_every_lagrangian_exports_exactly(name, lagrangian_exports):
    check_piece(lagrangian_exports[name])


@pytest.mark.parametrize("name", SYNAPSES)
def test_every_synapse_exports_exactly(name, synapse_exports):
    check_piece(synapse_exports[name])


def test_every_piece_is_tested():
    lagrangians = {
        n for n in dir(hl) if isinstance(getattr(hl, n), type) and n.startswith("L")
    }
    lagrangians = {
        n
        for n in lagrangians
        if issubclass(getattr(hl, n), hl.Lagrangian) and n != "Lagrangian"
    }
    assert lagrangians == set(LAGRANGIANS)
    synapses = {
        n
        for n in dir(hl)
        if isinstance(getattr(hl, n), type)
        and issubclass(getattr(hl, n), hl.Synapse)
        and n != "Synapse"
    }
    assert synapses == {s.split("-")[0] for s in SYNAPSES}


@pytest.fixture(scope="module")
def memory():
    rng = np.random.default_rng(0)
    patterns = jnp.asarray(rng.standard_normal((5, 8)), F32)
    ham = hl.HAM(
        neurons={"v": hl.NeuronLayer(hl.LIdentity(), (8,))},
        synapses={"memory": hl.DenseMemory(patterns, hl.LSoftmax(beta=2.0))},
        connections=[(("v",), "memory")],
    )
    queries = patterns[:2] + 0.3 * jnp.asarray(rng.standard_normal((2, 8)), F32)
    return ham, queries


def test_tol_stopped_descend_keeps_its_stop_rule(memory):
    # A `lax.while_loop` bounded by `steps`, stopping at the same step as in JAX, for
    # each sample of the batch; its energy trace (written step by step into a buffer)
    # exports too.
    ham, queries = memory

    def recall(q):
        sol = hl.descend(ham, {"v": q}, steps=100, dt=0.5, tol=1e-4, throw=False)
        return sol.xs["v"], sol.num_steps, sol.energies, sol.converged

    batched = jax.vmap(recall)
    outs = run_onnx(hl.to_onnx(batched, queries), queries)
    refs = batched(queries)
    assert np.all(refs[3]) and len(set(np.asarray(refs[1]).tolist())) > 1
    np.testing.assert_array_equal(outs[1], refs[1])
    np.testing.assert_array_equal(outs[3], refs[3])
    assert relative_error(outs[0], refs[0]) <= 1e-5
    assert relative_error(outs[2], refs[2]) <= 1e-5


@pytest.mark.parametrize("solver", [hl.Anderson(history=3), hl.SafeguardedIteration()])
def test_fixed_point_exports(memory, solver):
    ham, queries = memory

    def recall(q):
        sol = hl.fixed_point(ham, {"v": q}, tol=1e-5, solver=solver, throw=False)
        return sol.xs["v"], sol.converged

    batched = jax.vmap(recall)
    outs = run_onnx(hl.to_onnx(batched, queries), queries)
    refs = batched(queries)
    assert np.all(refs[1])
    np.testing.assert_array_equal(outs[1], refs[1])
    assert relative_error(outs[0], refs[0]) <= 1e-5


def count_nodes(graph) -> int:
    return sum(
        1 + sum(count_nodes(a.g) for a in node.attribute if a.HasField("g"))
        for node in graph.node
    )


def test_model_is_written_and_unused_outputs_dropped(memory, tmp_path):
    ham, queries = memory
    path = tmp_path / "recall.onnx"

    def recall(q):
        sol = hl.descend(ham, {"v": q}, steps=4, dt=0.2, throw=False)
        return sol.xs["v"], sol.energies

    def states(q):
        return recall(q)[0]

    model = hl.to_onnx(jax.vmap(states), queries, path=path)
    loaded = onnx.load(str(path))
    onnx.checker.check_model(loaded)
    assert [i.name for i in loaded.graph.input] == ["input_0"]
    assert [o.name for o in loaded.graph.output] == ["output_0"]
    assert loaded.SerializeToString() == model.SerializeToString()
    assert model.producer_name == "jax2onnx"
    # The energy trace nobody returns is not computed.
    both = hl.to_onnx(jax.vmap(recall), queries)
    assert [o.name for o in both.graph.output] == ["output_0", "output_1"]
    assert count_nodes(model.graph) < count_nodes(both.graph) - 5
    # Nor is what reads a dropped loop carry: a `tol` loop's trace buffer.
    stopped = jax.vmap(
        lambda q: hl.descend(ham, {"v": q}, steps=50, dt=0.5, tol=1e-4).xs["v"]
    )
    stopped_free = jax.vmap(
        lambda q: hl.descend(ham, {"v": q}, steps=50, dt=0.5, tol=1e-4, throw=False).xs[
            "v"
        ]
    )
    (out,) = run_onnx(hl.to_onnx(stopped_free, queries), queries)
    assert relative_error(out, stopped(queries)) <= 1e-5


def test_values_nobody_returns_are_not_exported(memory):
    # A gamma draw has no ONNX conversion, but nothing returned depends on it: not
    # in the body, not in a loop carry of `lax.scan` or `lax.while_loop`.
    ham, queries = memory
    key = jax.random.key(0)

    def recall(q):
        unused = jax.random.gamma(key, q + 2.0, dtype=F32)

        def scanned(i, carry):
            x, junk = carry
            return 0.9 * x, jax.random.gamma(key, junk + 2.0, dtype=F32)

        def looped(carry):
            x, junk, i = carry
            return 0.9 * x, jax.random.gamma(key, junk + 2.0, dtype=F32), i + 1

        x, _ = jax.lax.fori_loop(0, 3, scanned, (q, unused))
        x, _, _ = jax.lax.while_loop(lambda c: c[2] < 3, looped, (x, q, 0))
        return hl.descend(ham, {"v": x}, steps=2, dt=0.2, throw=False).xs["v"]

    batched = jax.vmap(recall)
    (out,) = run_onnx(hl.to_onnx(batched, queries), queries)
    assert relative_error(out, batched(queries)) <= 1e-5


def test_run_time_checks_on_the_inputs_are_refused(memory):
    ham, queries = memory
    recall = jax.vmap(lambda q: hl.descend(ham, {"v": q}, steps=2, dt=0.2).xs["v"])
    for export in (hl.to_onnx, hl.to_jax_export):
        with pytest.raises(ValueError, match="throw=False") as info:
            export(recall, queries)
        assert "made at hamux_lagr" in str(info.value)


def test_operations_onnx_lacks_are_named(memory):
    # A gamma draw has no ONNX conversion: the error names it and where it is made.
    ham, queries = memory

    def noisy_recall(q, alpha):
        noise = jax.random.gamma(jax.random.key(0), alpha, dtype=F32)  # a constant key
        return hl.descend(ham, {"v": q + noise}, steps=2, dt=0.2, throw=False).xs["v"]

    with pytest.raises(ValueError, match="cannot export `random_gamma`") as info:
        hl.to_onnx(noisy_recall, queries[0], queries[0])
    assert "test_export.py" in str(info.value)


def test_example_args_must_be_arrays(memory):
    ham, _ = memory
    with pytest.raises(TypeError, match="leaf 0 is a str"):
        hl.to_onnx(lambda x: x, "query")
    with pytest.raises(ValueError, match="at least one example input"):
        hl.to_jax_export(lambda: jnp.zeros(3))


def test_messages_without_the_type_hook():
    out = run_without_hook(
        """
        import sys
        import hamux_lagr as hl
        for call in (lambda: hl.to_onnx(None, 1.0), lambda: hl.to_jax_export(3, 1.0)):
            try:
                call()
            except TypeError as e:
                print("TypeError:", e)
        sys.modules["jax2onnx"] = None  # as if the extra were not installed
        try:
            hl.to_onnx(lambda x: x, 1.0)
        except ImportError as e:
            print("ImportError:", e)
        """
    )
    assert "TypeError: `fn` must be a function in `to_onnx`, got NoneType" in out
    assert "TypeError: `fn` must be a function in `to_jax_export`, got int" in out
    assert "pip install hamux_lagr[export]" in out


def test_jax_export_round_trip(memory, tmp_path):
    ham, queries = memory
    path = tmp_path / "recall.bin"

    def recall(q):
        sol = hl.descend(ham, {"v": q}, steps=10, dt=0.5, throw=False)
        return {"v": sol.xs["v"], "energies": sol.energies}

    batched = jax.vmap(recall)
    hl.to_jax_export(batched, queries, path=path)
    exported = jax.export.deserialize(bytearray(path.read_bytes()))
    out = exported.call(queries)
    ref = batched(queries)
    assert tree_allclose(out, ref, rtol=1e-6, atol=1e-6)
    assert "stablehlo" in exported.mlir_module()


def test_inputs_take_jax_default_dtypes():
    # With x64 off (a user's default), a float64 NumPy example and a Python float give
    # float32 inputs, as they do under `jax.jit`: the model runs in onnxruntime, and
    # `to_jax_export` agrees.
    out = run_without_hook(
        """
        import jax.numpy as jnp
        import numpy as np
        import onnxruntime as ort
        import hamux_lagr as hl

        patterns = np.linspace(-1.0, 1.0, 24).reshape(3, 8)
        ham = hl.HAM(
            neurons={"v": hl.NeuronLayer(hl.LIdentity(), (8,))},
            synapses={"memory": hl.DenseMemory(jnp.asarray(patterns), hl.LSoftmax())},
            connections=[(("v",), "memory")],
        )

        def recall(q, shift):
            x = hl.descend(ham, {"v": q + shift}, steps=2, dt=0.2, throw=False).xs["v"]
            return x

        examples = (np.zeros(8, np.float64), 0.5)
        model = hl.to_onnx(recall, *examples)
        session = ort.InferenceSession(model.SerializeToString())
        print([i.type for i in session.get_inputs()])
        inputs = {"input_0": np.ones(8, np.float32), "input_1": np.asarray(0.5, np.float32)}
        (got,) = session.run(None, inputs)
        want = recall(jnp.ones(8), 0.5)
        print(got.dtype, want.dtype, np.allclose(got, want, rtol=1e-5, atol=1e-6))
        exported = hl.to_jax_export(recall, *examples)
        print([a.dtype for a in exported.in_avals])
        """
    )
    lines = out.strip().splitlines()
    assert lines[-3] == "['tensor(float)', 'tensor(float)']"
    assert lines[-2] == "float32 float32 True"
    assert lines[-1] == "[dtype('float32'), dtype('float32')]"


def test_a_parameter_given_as_an_input_is_named(memory):
    # `dt` as a model input, with `throw=False`: either no check is left on it and
    # the model runs, or the error names `dt` and does not blame `throw`.
    ham, queries = memory

    def recall(q, dt):
        return hl.descend(ham, {"v": q}, steps=3, dt=dt, throw=False).xs["v"]

    dt = jnp.asarray(0.2, F32)
    for export in (hl.to_onnx, hl.to_jax_export):
        try:
            exported = export(recall, queries[0], dt)
        except ValueError as e:
            message = str(e)
            assert re.search(r"`dt\b", message), message
            assert "throw=True" not in message
            continue
        if export is hl.to_onnx:
            (out,) = run_onnx(exported, queries[0], dt)
        else:
            out = exported.call(queries[0], dt)
        assert relative_error(out, recall(queries[0], dt)) <= 1e-5


@pytest.mark.parametrize("solve", ["descend", "fixed_point"])
def test_jax_export_with_a_symbolic_batch(memory, solve):
    ham, queries = memory

    def recall(q):
        if solve == "descend":
            return hl.descend(ham, {"v": q}, steps=5, dt=0.5, throw=False).xs["v"]
        return hl.fixed_point(ham, {"v": q}, tol=1e-5, throw=False).xs["v"]

    batched = jax.vmap(recall)
    spec = jax.ShapeDtypeStruct(jax.export.symbolic_shape("b, 8"), F32)
    exported = hl.to_jax_export(batched, spec)
    for batch in (queries, queries[:1]):
        assert relative_error(exported.call(batch), batched(batch)) <= 1e-5


def test_outputs_that_are_inputs_export(memory):
    # An input returned as it is, and one value returned twice: each is an output of
    # its own in the ONNX graph.
    ham, queries = memory

    def recall(q):
        x = hl.descend(ham, {"v": q}, steps=2, dt=0.2, throw=False).xs["v"]
        return q, x, x

    batched = jax.vmap(recall)
    outs = run_onnx(hl.to_onnx(batched, queries), queries)
    for out, ref in zip(outs, batched(queries)):
        assert relative_error(out, ref) <= 1e-5
