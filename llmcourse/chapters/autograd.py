"""A scalar automatic-differentiation engine, in the spirit of Karpathy's *micrograd*.

Every arithmetic operation on :class:`Value` objects creates a new ``Value`` that remembers its
inputs and a small closure, ``_backward``, holding the *local* derivative of that one operation.
:meth:`Value.backward` orders the graph topologically and calls the closures from the output back to
the inputs, so each node's gradient is complete before it is passed on (the chain rule, applied once
per edge: this is reverse-mode automatic differentiation, i.e. backpropagation).

    >>> a, b = Value(2.0), Value(-3.0)
    >>> c = (a * b + a).tanh()
    >>> c.backward()
    >>> round(a.grad, 6), round(b.grad, 6)   # dc/da = (b + 1)(1 - c^2), dc/db = a (1 - c^2)
    (-0.002682, 0.002682)

Conventions (the same as PyTorch, so results can be compared with ``torch.autograd``):

* ``relu'(0) = 0``.
* ``backward()`` *adds* to the gradients of leaves (nodes not produced by an operation), so calling
  it twice gives twice the gradient and two outputs give the sum of their gradients; call
  :meth:`Value.zero_grad` (or :meth:`Module.zero_grad`) before each new step. The gradients of
  intermediate nodes are those of the latest ``backward()`` call.
* Values are Python floats (double precision).
"""
from __future__ import annotations

import math
import random
import sys
from collections.abc import Iterable, Sequence
from numbers import Real
from typing import Union

Number = Union[int, float]


def _check_number(x: object, what: str) -> float:
    """``x`` as a float, or a TypeError naming ``what`` (bools are refused: True + x is a bug)."""
    if type(x) is not float:  # fast path for the common case: the ABC check below is slow
        if isinstance(x, bool) or not isinstance(x, Real):
            raise TypeError(f"{what} must be a real number (int or float), got {type(x).__name__} {x!r}")
        x = float(x)
    if not math.isfinite(x):
        raise ValueError(f"{what} is {x}; expected a finite number")
    return x


MAX_EXP_ARG = math.log(sys.float_info.max)  # 709.78: math.exp of anything larger overflows


class Value:
    """A scalar that records how it was computed, so its gradient can be backpropagated.

    The class holds ``+``, ``*`` and backpropagation; every other operation is a function attached
    below (``Value.exp = exp``), one at a time, exactly as chapter 4 builds it.
    """

    __slots__ = ("data", "grad", "_backward", "_prev", "_op", "label")

    def __init__(self, data, _children=(), _op="", label=""):
        self.data = _check_number(data, "Value data")
        self.grad = 0.0                   # d(output)/d(self), filled in by backward()
        self._backward = lambda: None     # leaves have nothing to pass on
        self._prev = tuple(_children)     # the inputs of the operation that made this node
        self._op = _op
        self.label = label

    @staticmethod
    def _wrap(other):
        return other if isinstance(other, Value) else Value(_check_number(other, "operand"))

    def __repr__(self):
        name = f"{self.label}=" if self.label else ""
        return f"Value({name}data={self.data:.4g}, grad={self.grad:.4g})"

    def __add__(self, other):
        other = self._wrap(other)
        out = Value(self.data + other.data, (self, other), "+")

        def _backward():                  # d(a+b)/da = d(a+b)/db = 1
            self.grad += out.grad
            other.grad += out.grad

        out._backward = _backward
        return out

    def __mul__(self, other):
        other = self._wrap(other)
        out = Value(self.data * other.data, (self, other), "*")

        def _backward():                  # d(ab)/da = b, d(ab)/db = a
            self.grad += other.data * out.grad
            other.grad += self.data * out.grad

        out._backward = _backward
        return out

    def topological_order(self):
        """Every node this one depends on, each after all of its inputs (iterative: deep graphs are fine)."""
        order, visited = [], set()
        stack = [(self, False)]
        while stack:
            node, inputs_done = stack.pop()
            if inputs_done:
                order.append(node)        # all of its inputs are already placed
                continue
            if id(node) in visited:
                continue
            visited.add(id(node))
            stack.append((node, True))
            stack.extend((child, False) for child in node._prev if id(child) not in visited)
        return order

    def backward(self, grad=1.0):
        """Backpropagate from this node: afterwards ``x.grad`` holds d(self)/dx for every input ``x``.

        ``grad`` seeds d(loss)/d(self) (1 for a loss). Leaf gradients accumulate (see module doc).
        """
        seed = _check_number(grad, "backward seed gradient")
        order = self.topological_order()
        for node in order:
            if node._prev:                # intermediate node: its gradient is recomputed from scratch
                node.grad = 0.0
        self.grad += seed
        for node in reversed(order):      # outputs before inputs: each grad is complete when used
            node._backward()

    def zero_grad(self):
        """Set the gradient of this node and of every node it depends on to 0."""
        for node in self.topological_order():
            node.grad = 0.0


# --------------------------------------------------------------------------- operations, one at a time
def __pow__(self, exponent):
    if isinstance(exponent, Value):
        raise TypeError("Value ** Value is not supported: the exponent must be a constant int or float "
                        "(for a variable exponent write (y * x.log()).exp())")
    p = _check_number(exponent, "exponent")
    x = self.data
    if x == 0.0 and p < 0:
        raise ValueError(f"0 ** {p} is undefined (division by zero); the base must be non-zero for a negative exponent")
    if x < 0.0 and not p.is_integer():
        raise ValueError(f"({x}) ** {p} is not a real number: a negative base needs an integer exponent")
    out = Value(x**p, (self,), f"**{p:g}")
    if p == 0.0:
        local = 0.0                       # x^0 = 1 is constant
    elif x == 0.0 and p < 1.0:
        local = math.inf                  # the slope of x^p at 0 is infinite for 0 < p < 1 (torch: inf too)
    else:
        local = p * x ** (p - 1)

    def _backward():                      # d(x^p)/dx = p x^(p-1)
        self.grad += local * out.grad

    out._backward = _backward
    return out


def __neg__(self):                        # -a = a * (-1)
    return self * -1


def __sub__(self, other):                 # a - b = a + (-b)
    return self + (-self._wrap(other))


def __truediv__(self, other):             # a / b = a * b^-1
    other = self._wrap(other)
    if other.data == 0.0:
        raise ValueError("division by a Value whose data is 0")
    return self * other**-1


# Python calls these when the left operand is a plain number: 2 + v, 2 * v, 2 - v, 2 / v.
def __radd__(self, other):
    return self + other


def __rmul__(self, other):
    return self * other


def __rsub__(self, other):
    return self._wrap(other) - self


def __rtruediv__(self, other):
    return self._wrap(other) / self


def exp(self):
    if self.data > MAX_EXP_ARG:
        raise OverflowError(f"exp({self.data}) is larger than the largest float (exp overflows above "
                            f"{MAX_EXP_ARG:.2f}); scale the input down, or use a log-space formula")
    out = Value(math.exp(self.data), (self,), "exp")

    def _backward():                      # d(e^x)/dx = e^x, which is out.data
        self.grad += out.data * out.grad

    out._backward = _backward
    return out


def log(self):
    if self.data <= 0.0:
        raise ValueError(f"log of a non-positive number ({self.data}); the natural log needs data > 0")
    out = Value(math.log(self.data), (self,), "log")

    def _backward():                      # d(ln x)/dx = 1/x
        self.grad += out.grad / self.data

    out._backward = _backward
    return out


def tanh(self):
    t = math.tanh(self.data)
    out = Value(t, (self,), "tanh")

    def _backward():                      # d(tanh x)/dx = 1 - tanh^2 x
        self.grad += (1.0 - t * t) * out.grad

    out._backward = _backward
    return out


def sigmoid(self):
    x = self.data
    # two algebraically equal forms; each avoids overflow of exp on its side
    s = 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))
    out = Value(s, (self,), "sigmoid")

    def _backward():                      # d(sigma)/dx = sigma (1 - sigma)
        self.grad += s * (1.0 - s) * out.grad

    out._backward = _backward
    return out


def relu(self):
    out = Value(self.data if self.data > 0 else 0.0, (self,), "relu")

    def _backward():                      # 1 for x > 0, else 0 (at exactly 0: 0, as in PyTorch)
        self.grad += (1.0 if self.data > 0 else 0.0) * out.grad

    out._backward = _backward
    return out


# the order in which chapter 4 adds them; each is checked against torch.autograd as it arrives
OPERATIONS = {
    "__pow__": __pow__, "__neg__": __neg__, "__sub__": __sub__, "__truediv__": __truediv__,
    "__radd__": __radd__, "__rmul__": __rmul__, "__rsub__": __rsub__, "__rtruediv__": __rtruediv__,
    "exp": exp, "log": log, "tanh": tanh, "sigmoid": sigmoid, "relu": relu,
}
for _name, _fn in OPERATIONS.items():
    setattr(Value, _name, _fn)
del _name, _fn, __pow__, __neg__, __sub__, __truediv__, __radd__, __rmul__, __rsub__, __rtruediv__
del exp, log, tanh, sigmoid, relu


# --------------------------------------------------------------------------- a tiny neural-network library
ACTIVATIONS = ("relu", "tanh", "sigmoid", "linear")


class Module:
    """Something with parameters: a neuron, a layer or a network."""

    def parameters(self) -> list[Value]:
        return []

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = 0.0


class Neuron(Module):
    """``act(w . x + b)`` for one output."""

    def __init__(self, n_in: int, activation: str = "relu", rng: random.Random | None = None):
        if not isinstance(n_in, int) or isinstance(n_in, bool) or n_in < 1:
            raise ValueError(f"n_in must be a positive int, got {n_in!r}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; expected one of {ACTIVATIONS}")
        rng = rng or random.Random(0)
        bound = 1.0 / math.sqrt(n_in)  # the same uniform range as torch.nn.Linear's default
        self.w = [Value(rng.uniform(-bound, bound)) for _ in range(n_in)]
        self.b = Value(rng.uniform(-bound, bound))
        self.activation = activation

    def __call__(self, x: Sequence[Value | Number]) -> Value:
        if len(x) != len(self.w):
            raise ValueError(f"neuron expects {len(self.w)} inputs, got {len(x)}")
        z = sum((wi * xi for wi, xi in zip(self.w, x)), self.b)
        return z if self.activation == "linear" else getattr(z, self.activation)()

    def parameters(self) -> list[Value]:
        return self.w + [self.b]


class Layer(Module):
    """``n_out`` neurons reading the same inputs."""

    def __init__(self, n_in: int, n_out: int, activation: str = "relu", rng: random.Random | None = None):
        if not isinstance(n_out, int) or isinstance(n_out, bool) or n_out < 1:
            raise ValueError(f"n_out must be a positive int, got {n_out!r}")
        rng = rng or random.Random(0)
        self.neurons = [Neuron(n_in, activation, rng) for _ in range(n_out)]

    def __call__(self, x: Sequence[Value | Number]) -> list[Value]:
        return [n(x) for n in self.neurons]

    def parameters(self) -> list[Value]:
        return [p for n in self.neurons for p in n.parameters()]


class MLP(Module):
    """A multilayer perceptron: hidden layers use ``activation``, the last layer ``output_activation``.

    ``MLP(3, [4, 2])`` is the 3-4-2 network of chapter 4 (linear outputs by default: a ReLU on the
    outputs would clip negative scores to 0 and stop their gradient).
    """

    def __init__(self, n_in: int, sizes: Iterable[int], activation: str = "relu",
                 output_activation: str = "linear", seed: int = 0):
        sizes = list(sizes)
        if not sizes:
            raise ValueError("sizes must list at least one layer size, e.g. [4, 2]")
        rng = random.Random(seed)
        dims = [n_in] + sizes
        self.layers = [
            Layer(dims[i], dims[i + 1], activation if i < len(sizes) - 1 else output_activation, rng)
            for i in range(len(sizes))
        ]

    def __call__(self, x: Sequence[Value | Number]) -> list[Value]:
        for layer in self.layers:
            x = layer(x)
        return x

    def parameters(self) -> list[Value]:
        return [p for layer in self.layers for p in layer.parameters()]


__all__ = ["Value", "Module", "Neuron", "Layer", "MLP", "ACTIVATIONS"]
