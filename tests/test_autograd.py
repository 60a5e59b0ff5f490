"""The scalar autograd engine against torch.autograd (double precision) and hand-derived values."""
import math
import random

import pytest
import torch

from llmcourse.chapters.autograd import MLP, Layer, Neuron, Value

TOL = 1e-9


def close(a: float, b: float, tol: float = TOL) -> bool:
    return math.isclose(a, b, rel_tol=tol, abs_tol=tol)


def leaf_pair(x: float):
    return Value(x), torch.tensor(x, dtype=torch.float64, requires_grad=True)


def random_expression(rng: random.Random, leaves: list, n_ops: int = 12):
    """Apply ``n_ops`` random operations to random earlier nodes; works on Values and on tensors alike.

    Earlier nodes are reused at random, so the graph has shared sub-expressions (fan-out).
    """
    nodes = list(leaves)
    for _ in range(n_ops):
        a, b = rng.choice(nodes), rng.choice(nodes)
        op = rng.randrange(13)
        c = rng.uniform(-2.0, 2.0)
        if op == 0:
            out = a + b
        elif op == 1:
            out = a - b
        elif op == 2:
            out = a * b
        elif op == 3:
            out = a / (b * b + 1.0)
        elif op == 4:
            out = (a * a + 0.5) ** 1.5  # fractional power of a positive base
        elif op == 5:
            out = a ** 3
        elif op == 6:
            out = (a * 0.3).exp()
        elif op == 7:
            out = (a * a + 0.1).log()
        elif op == 8:
            out = a.tanh()
        elif op == 9:
            out = a.sigmoid()
        elif op == 10:
            out = (a + c).relu()
        elif op == 11:
            out = c - a / 2.0 + c * b  # rsub, truediv by a number, rmul
        else:
            out = -a + 1.0 / (b * b + 2.0)  # neg, rtruediv
        nodes.append(out)
    return sum(nodes[len(leaves):], nodes[0] * 0.0)  # every op contributes


@pytest.mark.parametrize("seed", range(25))
def test_random_expressions_match_torch(seed):
    xs = [random.Random(1000 + seed).uniform(-2, 2) for _ in range(3)]
    pairs = [leaf_pair(x) for x in xs]
    ours = random_expression(random.Random(seed), [p[0] for p in pairs])
    ref = random_expression(random.Random(seed), [p[1] for p in pairs])
    ours.backward()
    ref.backward()
    assert close(ours.data, ref.item())
    for v, t in pairs:
        expected = 0.0 if t.grad is None else t.grad.item()  # None: the leaf was not used
        assert close(v.grad, expected), (v.grad, expected)


UNARY_CASES = [(name, x) for name in ["exp", "log", "tanh", "sigmoid", "relu"]
               for x in [-3.5, -0.7, 0.4, 2.0, 25.0] if not (name == "log" and x <= 0)]  # log: see below


@pytest.mark.parametrize("name,x", UNARY_CASES)
def test_unary_ops_match_torch(name, x):
    v, t = leaf_pair(x)
    out_v, out_t = getattr(v, name)(), getattr(t, name)()
    out_v.backward()
    out_t.backward()
    assert close(out_v.data, out_t.item()) and close(v.grad, t.grad.item())


@pytest.mark.parametrize("p", [-2, -0.5, 0, 0.5, 1, 2, 3.0, 4.25])
def test_pow_matches_torch(p):
    v, t = leaf_pair(1.7)
    (v**p).backward()
    (t**p).backward()
    assert close(v.grad, t.grad.item())


def test_sigmoid_is_stable_for_large_inputs():
    assert Value(-800.0).sigmoid().data == 0.0 and Value(800.0).sigmoid().data == 1.0


def test_relu_at_zero_has_zero_gradient_like_torch():
    v, t = leaf_pair(0.0)
    v.relu().backward()
    t.relu().backward()
    assert v.grad == t.grad.item() == 0.0


def test_node_used_twice_gets_both_contributions():
    x = Value(3.0)
    y = x * x  # dy/dx = 2x, not x: both edges must add into x.grad
    y.backward()
    assert x.grad == 6.0
    a = Value(-2.0)
    b = a * 3.0
    c = b * b + b  # b is shared: dc/db = 2b + 1 = -11, dc/da = 3 * -11
    c.backward()
    assert a.grad == -33.0 and b.grad == -11.0


def test_backward_twice_accumulates_like_torch():
    v, t = leaf_pair(0.8)
    out_v = (v * v).tanh() * v
    out_t = (t * t).tanh() * t
    out_v.backward()
    out_v.backward()
    out_t.backward(retain_graph=True)
    out_t.backward()
    assert close(v.grad, t.grad.item())
    out_v.zero_grad()
    assert v.grad == 0.0 and out_v.grad == 0.0


def test_two_outputs_add_their_gradients():
    x = Value(1.5)
    (x * x).backward()
    x.exp().backward()
    assert close(x.grad, 2 * 1.5 + math.exp(1.5))


def test_backward_seed_and_leaf_root():
    x = Value(2.0)
    (x * 4.0).backward(grad=0.5)
    assert x.grad == 2.0
    x.backward()  # a leaf as the root: d x / d x = 1, added
    assert x.grad == 3.0


def test_deep_graph_does_not_hit_the_recursion_limit():
    x = Value(1.0)
    y = x
    for _ in range(5000):
        y = y * 1.0001 + 0.0
    y.backward()
    assert close(x.grad, 1.0001**5000, 1e-9)


def test_mlp_forward_backward_matches_torch():
    net = MLP(3, [5, 4, 2], activation="tanh", seed=3)
    xs = [[0.5, -1.0, 2.0], [1.0, 2.0, 3.0], [-0.3, 0.0, 0.7]]
    targets = [[1.0, -1.0], [0.0, 1.0], [0.5, 0.5]]
    loss = sum(((o - t) ** 2 for x, y in zip(xs, targets) for o, t in zip(net(x), y)), Value(0.0)) / len(xs)
    loss.backward()

    # the same network in torch, built from the same numbers
    torch_layers = []
    for layer in net.layers:
        W = torch.tensor([[w.data for w in n.w] for n in layer.neurons], dtype=torch.float64, requires_grad=True)
        b = torch.tensor([n.b.data for n in layer.neurons], dtype=torch.float64, requires_grad=True)
        torch_layers.append((W, b))
    h = torch.tensor(xs, dtype=torch.float64)
    for i, (W, b) in enumerate(torch_layers):
        h = h @ W.T + b
        if i < len(torch_layers) - 1:
            h = torch.tanh(h)
    ref = ((h - torch.tensor(targets, dtype=torch.float64)) ** 2).sum() / len(xs)
    ref.backward()

    assert close(loss.data, ref.item())
    for layer, (W, b) in zip(net.layers, torch_layers):
        for j, n in enumerate(layer.neurons):
            assert all(close(w.grad, g) for w, g in zip(n.w, W.grad[j].tolist()))
            assert close(n.b.grad, b.grad[j].item())
    net.zero_grad()
    assert all(p.grad == 0.0 for p in net.parameters())
    assert len(net.parameters()) == (3 + 1) * 5 + (5 + 1) * 4 + (4 + 1) * 2


def test_mlp_init_matches_torch_linear_range_and_is_seeded():
    a, b = MLP(4, [3], seed=7), MLP(4, [3], seed=7)
    assert [p.data for p in a.parameters()] == [p.data for p in b.parameters()]
    assert all(abs(p.data) <= 0.5 for p in a.parameters())  # 1/sqrt(4)
    assert a.layers[-1].neurons[0].activation == "linear"


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("x", [0.0, -1.0])
def test_log_of_non_positive_raises(x):
    with pytest.raises(ValueError, match="non-positive"):
        Value(x).log()


def test_value_exponent_is_refused():
    with pytest.raises(TypeError, match="exponent"):
        Value(2.0) ** Value(3.0)


@pytest.mark.parametrize("bad", ["1.0", None, [1.0], True, 1 + 2j])
def test_non_numbers_are_refused(bad):
    with pytest.raises(TypeError, match="real number"):
        Value(bad)
    with pytest.raises(TypeError, match="real number"):
        Value(1.0) + bad


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nan_and_infinity_are_refused(bad):
    with pytest.raises(ValueError, match="expected a finite number"):
        Value(bad)


def test_exp_overflow_says_why():
    assert Value(709.0).exp().data == pytest.approx(math.exp(709.0))
    with pytest.raises(OverflowError, match="larger than the largest float"):
        Value(1000.0).exp()


def test_division_by_zero_and_bad_powers_raise():
    with pytest.raises(ValueError, match="division"):
        Value(1.0) / 0.0
    with pytest.raises(ValueError, match="division"):
        Value(0.0) ** -1
    with pytest.raises(ValueError, match="negative base"):
        Value(-2.0) ** 0.5


def test_bad_network_arguments_raise():
    with pytest.raises(ValueError, match="activation"):
        Neuron(3, activation="gelu")
    with pytest.raises(ValueError, match="n_in"):
        Neuron(0)
    with pytest.raises(ValueError, match="n_out"):
        Layer(3, 0)
    with pytest.raises(ValueError, match="sizes"):
        MLP(3, [])
    with pytest.raises(ValueError, match="expects 3 inputs"):
        MLP(3, [2])([1.0, 2.0])
