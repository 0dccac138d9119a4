"""TorchOpt's examples/visualize.py names tensors with a mapping from tensor to name."""

from torchopt.visual import make_dot


def draw(meta_param):
    y = (meta_param * 2.0).sum()
    return make_dot(y, [{meta_param: "meta_param"}]).source
