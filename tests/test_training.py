import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

import hamux_lagr as hl


# XLA's backend optimisations cost more compile time than these tiny models run for.
FAST_COMPILE = {"xla_backend_optimization_level": 0}


def assert_grads_match_finite_differences(f, args, rng, eps=1e-6, rtol=1e-6):
    """Reverse-mode gradients against central differences along random directions."""
    # One compilation serves the gradient and the finite differences.
    value_and_grad = jax.jit(
        jax.value_and_grad(f, tuple(range(len(args)))), compiler_options=FAST_COMPILE
    )
    value = lambda *args: value_and_grad(*args)[0]  # noqa: E731
    _, grads = value_and_grad(*args)
    for i, (arg, grad) in enumerate(zip(args, grads)):
        direction = rng.standard_normal(np.shape(arg))
        shift = lambda sign: [  # noqa: E731
            a + sign * eps * direction if j == i else a for j, a in enumerate(args)
        ]
        numerical = (value(*shift(1)) - value(*shift(-1))) / (2 * eps)
        analytic = np.sum(np.asarray(grad) * direction)
        assert np.allclose(analytic, numerical, rtol=rtol, atol=1e-8), (
            i,
            analytic,
            numerical,
        )


def dense_memory_ham(patterns, beta):
    return hl.HAM(
        {"v": hl.NeuronLayer(hl.LIdentity(), (patterns.shape[1],))},
        {"memory": hl.DenseMemory(patterns, hl.LSoftmax(beta))},
        [(("v",), "memory")],
    )


def test_gradients_through_descend_match_finite_differences(rng):
    # float64 (conftest): central differences against reverse mode, through the Euler
    # scan (and the energy trace) and the clamped dynamics of a two-layer model, with
    # respect to synapses and Lagrangian parameters.
    queries = rng.standard_normal((2, 4))
    target = rng.standard_normal((2, 4))
    hidden = rng.standard_normal(3)
    clamp = {"v": np.array([True, False, True, False])}

    def memory_loss(patterns, beta):
        ham = dense_memory_ham(patterns, beta)
        sol = jax.vmap(lambda q: hl.descend(ham, {"v": q}, steps=6, dt=0.3))(queries)
        return jnp.sum((sol.xs["v"] - target) ** 2) + 0.1 * jnp.sum(sol.energies)

    def two_layer_loss(W, beta):
        ham = hl.HAM(
            {
                "v": hl.NeuronLayer(hl.LIdentity(), (4,)),
                "h": hl.NeuronLayer(hl.LTanh(beta), (3,), tau=0.5),
            },
            {"W": hl.LinearSynapse(W)},
            [(("v", "h"), "W")],
        )
        xs = hl.descend(
            ham, {"v": queries[0], "h": hidden}, steps=4, dt=0.2, clamp=clamp
        ).xs
        return jnp.sum((xs["v"] - target[0]) ** 2) + jnp.sum(xs["h"] ** 2)

    patterns = rng.standard_normal((3, 4))
    assert_grads_match_finite_differences(memory_loss, (patterns, 2.0), rng)
    W = rng.standard_normal((4, 3))
    assert_grads_match_finite_differences(two_layer_loss, (W, 1.5), rng)


def test_optax_training_lowers_a_reconstruction_loss(rng, getkey):
    # Learn to restore 6 binary patterns from noisy versions, training the stored
    # patterns and the softmax's inverse temperature end to end through the dynamics.
    data = rng.choice([-1.0, 1.0], size=(6, 10))
    noisy = data + 0.8 * rng.standard_normal(data.shape)
    ham = hl.HAM(
        {"v": hl.NeuronLayer(hl.LIdentity(), (10,))},
        {"memory": hl.DenseMemory.random(6, 10, hl.LSoftmax(beta=1.0), key=getkey())},
        [(("v",), "memory")],
    )

    def loss_fn(ham):
        xs = jax.vmap(
            lambda x: hl.descend(ham, {"v": x}, steps=5, dt=0.5, trace=False).xs
        )(noisy)
        return jnp.mean((xs["v"] - data) ** 2)

    optim = optax.adam(0.1)
    opt_state = optim.init(eqx.filter(ham, eqx.is_inexact_array))

    @eqx.filter_jit
    def step(ham, opt_state):
        loss, grads = eqx.filter_value_and_grad(loss_fn)(ham)
        # optax's Adam mixes int32 and float in its bias correction: it is not
        # written for the suite's strict dtype promotion (the library is).
        with jax.numpy_dtype_promotion("standard"):
            updates, opt_state = optim.update(grads, opt_state)
        return eqx.apply_updates(ham, updates), opt_state, loss

    losses = []
    for _ in range(30):
        ham, opt_state, loss = step(ham, opt_state)
        losses.append(float(loss))
    assert np.all(np.isfinite(losses))
    assert losses[-1] < 0.25 * losses[0], losses
    assert ham.synapses["memory"].lagrangian.beta != 1.0  # Lagrangian trained too
