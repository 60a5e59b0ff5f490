"""The hand-written NumPy backward pass (chapter 4's 3-4-2 network) against torch.autograd and by hand."""
import numpy as np
import pytest
import torch

from llmcourse.chapters import nn_numpy as nn
from llmcourse.chapters.autograd import Value

X0 = np.array([1.0, 2.0, 3.0])  # the articles' input


def torch_reference(params, X, hidden, output, loss, target):
    """Loss and gradients [(dW, db), ...] computed by torch.autograd in double precision."""
    tensors = [(torch.tensor(W, requires_grad=True), torch.tensor(b, requires_grad=True)) for W, b in params]
    acts = {"relu": torch.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh, "linear": lambda z: z}
    h = torch.tensor(np.atleast_2d(X))
    for i, (W, b) in enumerate(tensors):
        h = acts[output if i == len(tensors) - 1 else hidden](h @ W.T + b)
    if loss == "mse":
        value = torch.nn.functional.mse_loss(h, torch.tensor(np.atleast_2d(target)))
    else:
        value = torch.nn.functional.cross_entropy(h, torch.tensor(np.atleast_1d(target)))
    value.backward()
    return value.item(), [(W.grad.numpy(), b.grad.numpy()) for W, b in tensors]


def numpy_loss_and_grads(params, X, hidden, output, loss, target):
    out, cache = nn.forward(params, X, hidden, output)
    value, d_out = (nn.mse_loss if loss == "mse" else nn.cross_entropy_loss)(out, target)
    return value, nn.backward(params, cache, d_out, hidden, output)


def assert_grads_close(ours, ref, tol=1e-10):
    assert len(ours) == len(ref)
    for (dW, db), (rW, rb) in zip(ours, ref):
        assert dW.shape == rW.shape and db.shape == rb.shape
        np.testing.assert_allclose(dW, rW, rtol=tol, atol=tol)
        np.testing.assert_allclose(db, rb, rtol=tol, atol=tol)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize(
    "output,loss,target",
    [("linear", "ce", 1), ("linear", "mse", [1.0, 0.0]), ("relu", "mse", [1.0, 0.0])],  # last: as the articles wrote it
)
def test_342_network_on_the_articles_input_matches_torch(seed, output, loss, target):
    params = nn.init_params([3, 4, 2], seed=seed, decimals=1)
    ours = numpy_loss_and_grads(params, X0, "relu", output, loss, target)
    ref = torch_reference(params, X0, "relu", output, loss, target)
    assert abs(ours[0] - ref[0]) < 1e-12
    assert_grads_close(ours[1], ref[1])


@pytest.mark.parametrize("hidden", ["relu", "sigmoid", "tanh"])
def test_deeper_batched_network_matches_torch(hidden):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(7, 5))
    labels = rng.integers(0, 3, size=7)
    params = nn.init_params([5, 6, 4, 3], seed=2)
    ours = numpy_loss_and_grads(params, X, hidden, "linear", "ce", labels)
    ref = torch_reference(params, X, hidden, "linear", "ce", labels)
    assert abs(ours[0] - ref[0]) < 1e-12
    assert_grads_close(ours[1], ref[1])


def test_hand_derived_linear_layer():
    # one linear layer, W = [[1,0,0],[0,1,0]], b = 0, x = [1,2,3], target [0,0]:
    # y = [1, 2]; MSE = (1 + 4) / 2 = 2.5; dC/dy = 2 (y - t) / 2 = [1, 2]; dC/dW = [1, 2]^T x
    params = [(np.array([[1.0, 0, 0], [0, 1.0, 0]]), np.zeros(2))]
    loss, grads = numpy_loss_and_grads(params, X0, "relu", "linear", "mse", [0.0, 0.0])
    assert loss == 2.5
    np.testing.assert_array_equal(grads[0][0], [[1, 2, 3], [2, 4, 6]])
    np.testing.assert_array_equal(grads[0][1], [1, 2])


def test_relu_output_blocks_the_gradient_of_a_negative_score():
    # the articles' ReLU on the output: a unit with negative pre-activation gets zero gradient
    params = [(np.array([[1.0, 0, 0], [-1.0, 0, 0]]), np.zeros(2))]
    _, grads = numpy_loss_and_grads(params, X0, "relu", "relu", "mse", [0.0, 1.0])
    assert np.all(grads[0][0][1] == 0.0) and grads[0][1][1] == 0.0


def test_batch_gradient_is_the_mean_of_per_example_gradients():
    rng = np.random.default_rng(3)
    X, labels = rng.normal(size=(6, 3)), rng.integers(0, 2, size=6)
    params = nn.init_params([3, 4, 2], seed=0)
    _, batch = numpy_loss_and_grads(params, X, "relu", "linear", "ce", labels)
    singles = [numpy_loss_and_grads(params, X[i], "relu", "linear", "ce", labels[i])[1] for i in range(6)]
    for l, (dW, db) in enumerate(batch):
        np.testing.assert_allclose(dW, np.mean([s[l][0] for s in singles], axis=0), atol=1e-12)
        np.testing.assert_allclose(db, np.mean([s[l][1] for s in singles], axis=0), atol=1e-12)


def test_sgd_step_matches_torch_sgd():
    params = nn.init_params([3, 4, 2], seed=4)
    _, grads = numpy_loss_and_grads(params, X0, "relu", "linear", "ce", 0)
    new = nn.sgd_step(params, grads, lr=0.1)
    tensors = [torch.tensor(p, requires_grad=True) for W, b in params for p in (W, b)]
    for t, g in zip(tensors, [g for pair in grads for g in pair]):
        t.grad = torch.tensor(g)
    torch.optim.SGD(tensors, lr=0.1).step()
    for t, p in zip(tensors, [p for pair in new for p in pair]):
        np.testing.assert_allclose(t.detach().numpy(), p, atol=1e-15)


def test_value_engine_gives_the_same_gradients_as_numpy():
    params = nn.init_params([3, 4, 2], seed=0, decimals=1)
    vparams = [([[Value(w) for w in row] for row in W], [Value(x) for x in b]) for W, b in params]
    h = [Value(x) for x in X0]
    for i, (W, b) in enumerate(vparams):
        z = [sum((w * a for w, a in zip(row, h)), bias) for row, bias in zip(W, b)]
        h = [zi.relu() for zi in z] if i == 0 else z
    # cross-entropy for class 1: logsumexp(z) - z_1
    loss = sum((zi.exp() for zi in h), Value(0.0)).log() - h[1]
    loss.backward()
    value, grads = numpy_loss_and_grads(params, X0, "relu", "linear", "ce", 1)
    assert abs(loss.data - value) < 1e-12
    for (W, b), (dW, db) in zip(vparams, grads):
        np.testing.assert_allclose([[w.grad for w in row] for row in W], dW, atol=1e-12)
        np.testing.assert_allclose([x.grad for x in b], db, atol=1e-12)


def test_central_difference_agrees():
    params = nn.init_params([3, 4, 2], seed=5)
    _, grads = numpy_loss_and_grads(params, X0, "tanh", "linear", "mse", [0.5, -0.5])
    W = params[0][0]
    eps = 1e-6
    for idx in [(0, 0), (2, 1), (3, 2)]:
        old = W[idx]
        W[idx] = old + eps
        up = numpy_loss_and_grads(params, X0, "tanh", "linear", "mse", [0.5, -0.5])[0]
        W[idx] = old - eps
        down = numpy_loss_and_grads(params, X0, "tanh", "linear", "mse", [0.5, -0.5])[0]
        W[idx] = old
        assert abs((up - down) / (2 * eps) - grads[0][0][idx]) < 1e-8


# ----------------------------------------------------------------------------- bad input
def test_bad_inputs_raise():
    params = nn.init_params([3, 4, 2])
    with pytest.raises(ValueError, match="features"):
        nn.forward(params, np.ones(4))
    with pytest.raises(ValueError, match="activation"):
        nn.forward(params, X0, hidden="gelu")
    with pytest.raises(ValueError, match="labels"):
        nn.cross_entropy_loss(np.zeros((1, 2)), [2])
    with pytest.raises(ValueError, match="labels"):
        nn.cross_entropy_loss(np.zeros((1, 2)), [0.5])
    with pytest.raises(ValueError, match="shape"):
        nn.mse_loss(np.zeros((1, 2)), [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="sizes"):
        nn.init_params([3])
    with pytest.raises(ValueError, match="learning rate"):
        nn.sgd_step(params, params, lr=-0.1)
