"""Write saved_states_0.1.0.pt: classic optimizers' state dicts as difopt-core 0.1.0 (commit
02d6743, before the contract redesign) saved them, with the parameters before and after one
more step. tests/test_state.py loads them with today's code, steps once and compares.

    python tests/data/make_saved_states.py   # with difopt-core 0.1.0 installed
"""

import copy
import pathlib

import torch

import difopt

CASES = {
    "adam": (difopt.Adam, dict(lr=1e-2, weight_decay=0.1)),
    "amsgrad": (difopt.Adam, dict(lr=1e-2, amsgrad=True)),
    "adamw": (difopt.AdamW, dict(lr=1e-2)),
    "sgd-momentum": (difopt.SGD, dict(lr=1e-2, momentum=0.9, nesterov=True)),
    "rmsprop-centered": (difopt.RMSProp, dict(lr=1e-2, centered=True, momentum=0.5)),
    "adagrad": (difopt.Adagrad, dict(lr=1e-1, lr_decay=0.01)),
    "asgd": (difopt.ASGD, dict(lr=1e-2, t0=2.0)),
    "lion": (difopt.Lion, dict(lr=1e-3)),
}


def problem() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 2))
    return net.double(), torch.randn(8, 4).double(), torch.randn(8, 2).double()


def step(net: torch.nn.Module, opt, x: torch.Tensor, y: torch.Tensor, skip_bias: bool) -> None:
    opt.zero_grad()
    torch.nn.functional.mse_loss(net(x), y).backward()
    if skip_bias:
        net[2].bias.grad = None  # a parameter that misses a step: per-parameter counters
    opt.step()


if __name__ == "__main__":
    out = {}
    for name, (cls, kw) in CASES.items():
        net, x, y = problem()
        opt = cls(net.parameters(), **kw)
        for k in range(3):
            step(net, opt, x, y, skip_bias=k == 1)
        before = {k: v.detach().clone() for k, v in net.state_dict().items()}
        saved = copy.deepcopy(opt.state_dict())  # state_dict() holds the live tensors
        step(net, opt, x, y, skip_bias=False)
        after = {k: v.detach().clone() for k, v in net.state_dict().items()}
        out[name] = {"state_dict": saved, "before": before, "after": after}
    path = pathlib.Path(__file__).with_name("saved_states_0.1.0.pt")
    torch.save(out, path)
    print(f"wrote {path}")
