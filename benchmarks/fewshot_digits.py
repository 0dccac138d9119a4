"""Few-shot classification of rotated digits: MAML, first-order MAML, ANIL, Meta-SGD, iMAML
and ES-MAML with difopt, beside MAML and first-order MAML with TorchOpt 0.7.3 and higher 0.2.1.

Data (``fewshot_data.py``): scikit-learn's bundled 8x8 digits, each digit rotated by 0, 90,
180 and 270 degrees as a class of its own (40 classes), split class-disjointly 24 / 8 / 8 into
meta-train / meta-validation / meta-test classes by a seeded permutation. 5-way tasks, 1-shot
and 5-shot, 15 query images per class.

Every method and library trains the same MLP 64 -> 64 -> 64 -> 5 (ReLU) from the same
initial weights (``--seed``), on the same sequence of meta-training task batches, with the
same outer optimizer (``torch.optim.Adam``, ``--outer-lr``), for ``--meta-iters`` iterations
of ``--meta-batch`` tasks:

* ``maml``: second-order MAML, ``--inner-steps`` differentiable SGD steps (``--inner-lr``) on
  the support set; difopt ``MetaSGD``, TorchOpt ``MetaSGD``, higher ``innerloop_ctx``.
* ``fo-maml``: first-order MAML: the same number of inner steps without a graph, of its own
  rate ``--fo-inner-lr`` (0.2, chosen on the meta-validation split among 0.5, 0.2, 0.1 and
  0.05: at MAML's 0.5 its validation accuracy falls from the first iterations), the query
  gradient at the adapted weights taken as the meta-gradient; difopt ``sgd`` (functional),
  TorchOpt ``sgd`` (functional), higher ``innerloop_ctx(track_higher_grads=False)``.
* ``anil``: MAML on the head only (the last layer adapts, the body is meta-learned): difopt
  ``MetaSGD`` on the head.
* ``meta-sgd``: MAML with a learned learning rate per weight (Li et al., 2017), through
  ``difopt.MetaSGD(net, lr=[...])``; the rates are ``exp`` of meta-parameters (they must
  stay >= 0), initialised at ``--inner-lr``.
* ``imaml``: implicit MAML (Rajeswaran et al., 2019) with difopt-implicit's
  ``ImplicitMetaGradientModule``: the inner problem is the support loss plus
  ``--imaml-reg / 2 * |theta - phi|^2``, solved by ``--imaml-steps`` gradient steps; its
  meta-gradient by the implicit function theorem (``--imaml-cg`` CG iterations).
* ``es-maml``: ES-MAML (Song et al., 2020) with difopt-zeroorder's ``zero_order``: the
  meta-gradient of the query loss after adaptation is an evolution-strategies estimate
  (antithetic, ``--es-samples`` directions, ``--es-sigma``); the adaptation itself is the
  MAML inner loop.

The same second-order MAML written out with torch alone (``torch:maml``: the module's
parameters replaced by ``p - lr * g``, ``torch.autograd.grad(..., create_graph=True)``) is
trained and timed as well: a library's MAML is this computation plus the library's own
bookkeeping, so its time over TorchOpt's shows how much of TorchOpt's time any library could
save (printed, for information).

Evaluation is library-independent code (plain ``torch.autograd.grad`` steps on a functional
call of the model): each method adapts by its own rule (all weights, head only, learned
rates, proximal steps) for the same number of steps as in training, and is scored on the
query set. Reported: meta-test accuracy with a 95% confidence interval (1.96 standard errors)
over ``--test-tasks`` tasks; the un-adapted baseline (the method's meta-learned weights
scored on the query without adaptation: chance level, 20 %, since labels are relabelled per
task); and, for information, a random initialisation adapted by the MAML rule. Hyper-
parameters are fixed in this file; meta-validation accuracy (``--val-tasks`` tasks every
``--val-every`` iterations) is recorded and plotted; no number is chosen on the test split.

Threads: one by default (``--threads``): the layers are tiny, and on a shared 2-core machine
a pool of 2 intra-op threads spent its time waiting for a busy core (a MAML meta-iteration
measured about 2 s with 2 threads against 30 ms with 1, same load).

Time per meta-iteration: after training, every contender runs blocks of ``--timing-iters``
meta-iterations on a copy of the initial model, interleaved in rotated order over
``--repeats`` repetitions (median; see ``_bench.py``).

Checks: at the initial weights the MAML and first-order meta-gradients of difopt, TorchOpt and
higher equal a hand-written unrolled oracle's. Targets: difopt MAML's accuracy equals
TorchOpt's and higher's within the confidence interval; difopt MAML time <= 0.85 x TorchOpt's
and higher's; first-order MAML <= 0.6 x second-order MAML (difopt); every method beats the
un-adapted baseline by ``MARGIN`` (5-way 5-shot and 1-shot): that one is a check, and the
script exits 1 when it fails.

    python benchmarks/fewshot_digits.py            # full run (about 5-10 minutes on 2 cores)
    python benchmarks/fewshot_digits.py --quick    # smoke run (< 1 minute), same checks
"""

from __future__ import annotations

import copy
import math
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _bench  # noqa: E402
from fewshot_data import FewShotDigits, Task  # noqa: E402

NAME = "fewshot_digits"
N_WAY = 5
MARGIN = 0.15  # accuracy (absolute) every method must gain over the un-adapted baseline
TIME_TARGET_PEERS = 0.85
TIME_TARGET_FO = 0.6
GRAD_RTOL = 1e-4  # relative L2 error of a meta-gradient vs the oracle (float32)

METHODS = ("maml", "fo-maml", "anil", "meta-sgd", "imaml", "es-maml")
PEER_METHODS = ("maml", "fo-maml")
PEERS = ("torchopt", "higher")


# ----------------------------------------------------------------------------- model


ACTIVATION = "relu"  # of make_net and mlp; the tests of smooth-solution oracles use "tanh"


def make_net(hidden: int = 64) -> Any:
    from torch import nn

    act = {"relu": nn.ReLU, "tanh": nn.Tanh}[ACTIVATION]
    return nn.Sequential(
        nn.Linear(64, hidden),
        act(),
        nn.Linear(hidden, hidden),
        act(),
        nn.Linear(hidden, N_WAY),
    )


def mlp(params: Any, x: Any) -> Any:
    """The forward of :func:`make_net` on a list of its weights (``net.parameters()`` order):
    the functional call of the evaluation, the oracle, first-order MAML and ES-MAML (cheaper
    than ``torch.func.functional_call`` on these tiny layers)."""
    import torch
    import torch.nn.functional as F

    act = {"relu": F.relu, "tanh": torch.tanh}[ACTIVATION]
    h = act(F.linear(x, params[0], params[1]))
    h = act(F.linear(h, params[2], params[3]))
    return F.linear(h, params[4], params[5])


def restore(slots: list[tuple[Any, str, Any]]) -> None:
    """Put the initial (leaf) parameters back after a meta optimizer replaced them."""
    for module, name, p in slots:
        module._parameters[name] = p


def leaf_slots(net: Any) -> list[tuple[Any, str, Any]]:
    return [(m, n, p) for m in net.modules() for n, p in m._parameters.items() if p is not None]


# ----------------------------------------------------------------------------- methods


class Learner:
    """One method with one library: the meta-parameters, one meta-iteration, and the rule by
    which the evaluation adapts (``adapt_names``, ``lrs``, ``reg``)."""

    method = ""
    library = "difopt"

    def __init__(self, init_state: dict, cfg: Any) -> None:
        import torch

        self.cfg = cfg
        self.inner_lr = cfg.fo_inner_lr if self.method == "fo-maml" else cfg.inner_lr
        self.net = make_net(cfg.hidden)
        self.net.load_state_dict(init_state)
        self.slots = leaf_slots(self.net)
        self.names = [n for n, _ in self.net.named_parameters()]
        self.extra: list[Any] = []  # meta-parameters besides the weights
        self.setup()
        self.outer = torch.optim.Adam([*self.net.parameters(), *self.extra], lr=cfg.outer_lr)

    def setup(self) -> None:
        pass

    @property
    def key(self) -> str:
        return f"{self.library}:{self.method}"

    # evaluation rule (hand-written in evaluate())
    adapt_names: tuple[str, ...] | None = None  # None: every weight
    reg: float = 0.0  # proximal strength (iMAML)

    def eval_lrs(self) -> dict[str, Any]:
        return {n: self.inner_lr for n in self.names}

    def eval_steps(self) -> int:
        return self.cfg.inner_steps

    def eval_step_size(self) -> float | None:
        return None  # iMAML: the proximal solver's step

    def meta_step(self, batch: list[Task]) -> None:
        self.outer.zero_grad()
        for task in batch:
            self.task_backward(task, 1.0 / len(batch))
        self.outer.step()

    def task_backward(self, task: Task, weight: float) -> None:
        raise NotImplementedError

    def meta_grad(self, task: Task) -> list[Any]:
        """The meta-gradient of one task (for the checks), at the current weights."""
        for p in self.net.parameters():
            p.grad = None
        self.task_backward(task, 1.0)
        out = [p.grad.detach().clone() for p in self.net.parameters()]
        for p in self.net.parameters():
            p.grad = None
        return out


def _ce(logits: Any, y: Any) -> Any:
    import torch.nn.functional as F

    return F.cross_entropy(logits, y)


class MetaOptimizerMAML(Learner):
    """Second-order MAML with a meta optimizer that replaces the module's parameters
    (difopt.MetaSGD or torchopt.MetaSGD)."""

    method = "maml"

    def __init__(self, init_state: dict, cfg: Any, meta_sgd: Callable[..., Any], library: str):
        self.meta_sgd, self.library = meta_sgd, library
        super().__init__(init_state, cfg)

    def task_backward(self, task: Task, weight: float) -> None:
        opt = self.meta_sgd(self.net, lr=self.inner_lr)
        for _ in range(self.cfg.inner_steps):
            opt.step(_ce(self.net(task.xs), task.ys))
        (weight * _ce(self.net(task.xq), task.yq)).backward()
        restore(self.slots)


class TorchMAML(Learner):
    """Second-order MAML written out with torch alone (the floor of any library's time): the
    inner SGD steps replace the module's parameters by ``p - lr * g``, gradients by
    ``torch.autograd.grad(..., create_graph=True)``."""

    method, library = "maml", "torch"

    def task_backward(self, task: Task, weight: float) -> None:
        import torch

        for _ in range(self.cfg.inner_steps):
            params = [m._parameters[n] for m, n, _ in self.slots]
            loss = _ce(self.net(task.xs), task.ys)
            grads = torch.autograd.grad(loss, params, create_graph=True)
            for (m, n, _), p, g in zip(self.slots, params, grads):
                m._parameters[n] = p - self.inner_lr * g
        (weight * _ce(self.net(task.xq), task.yq)).backward()
        restore(self.slots)


class HigherMAML(Learner):
    method, library = "maml", "higher"

    def __init__(self, init_state: dict, cfg: Any, higher: Any, first_order: bool = False):
        import torch

        self.higher, self.first_order = higher, first_order
        if first_order:
            self.method = "fo-maml"
        super().__init__(init_state, cfg)
        self.inner_opt = torch.optim.SGD(self.net.parameters(), lr=self.inner_lr)

    def task_backward(self, task: Task, weight: float) -> None:
        import torch

        ctx = self.higher.innerloop_ctx(
            self.net,
            self.inner_opt,
            copy_initial_weights=False,
            track_higher_grads=not self.first_order,
        )
        with ctx as (fnet, diffopt):
            for _ in range(self.cfg.inner_steps):
                diffopt.step(_ce(fnet(task.xs), task.ys))
            loss = weight * _ce(fnet(task.xq), task.yq)
            if not self.first_order:
                loss.backward()
                return
            fast = fnet.parameters(time=-1)
            grads = torch.autograd.grad(loss, fast)
        for p, g in zip(self.net.parameters(), grads):
            p.grad = g if p.grad is None else p.grad + g


class FunctionalFOMAML(Learner):
    """First-order MAML on a functional call: ``sgd`` + ``apply_updates`` of a library
    (difopt or TorchOpt), gradients without a graph."""

    method = "fo-maml"

    def __init__(self, init_state: dict, cfg: Any, lib: Any, library: str):
        self.lib, self.library = lib, library
        super().__init__(init_state, cfg)
        self.inner = lib.sgd(lr=self.inner_lr)

    def task_backward(self, task: Task, weight: float) -> None:
        import torch

        params = tuple(p.detach().requires_grad_() for p in self.net.parameters())
        state = self.inner.init(params)
        for _ in range(self.cfg.inner_steps):
            grads = torch.autograd.grad(_ce(mlp(params, task.xs), task.ys), params)
            updates, state = self.inner.update(grads, state, inplace=False)
            params = tuple(
                p.detach().requires_grad_()
                for p in self.lib.apply_updates(params, updates, inplace=False)
            )
        grads = torch.autograd.grad(weight * _ce(mlp(params, task.xq), task.yq), params)
        for p, g in zip(self.net.parameters(), grads):
            p.grad = g if p.grad is None else p.grad + g


class ANIL(Learner):
    method = "anil"

    def setup(self) -> None:
        self.body, self.head = self.net[:-1], self.net[-1]
        self.head_slots = leaf_slots(self.head)
        self.adapt_names = tuple(n for n in self.names if n.startswith(f"{len(self.net) - 1}."))

    def task_backward(self, task: Task, weight: float) -> None:
        import difopt

        fs, fq = self.body(task.xs), self.body(task.xq)
        opt = difopt.MetaSGD(self.head, lr=self.inner_lr)
        for _ in range(self.cfg.inner_steps):
            opt.step(_ce(self.head(fs), task.ys))
        (weight * _ce(self.head(fq), task.yq)).backward()
        restore(self.head_slots)


class MetaSGDLearner(Learner):
    method = "meta-sgd"

    def setup(self) -> None:
        import torch

        self.log_lrs = [
            torch.full_like(p, math.log(self.cfg.inner_lr), requires_grad=True)
            for p in self.net.parameters()
        ]
        self.extra = self.log_lrs

    def eval_lrs(self) -> dict[str, Any]:
        return {n: log_lr.detach().exp() for n, log_lr in zip(self.names, self.log_lrs)}

    def task_backward(self, task: Task, weight: float) -> None:
        import difopt

        opt = difopt.MetaSGD(self.net, lr=[log_lr.exp() for log_lr in self.log_lrs])
        for _ in range(self.cfg.inner_steps):
            opt.step(_ce(self.net(task.xs), task.ys))
        (weight * _ce(self.net(task.xq), task.yq)).backward()
        restore(self.slots)


class IMAML(Learner):
    method = "imaml"

    def setup(self) -> None:
        import difopt

        cfg = self.cfg
        self.reg = cfg.imaml_reg
        steps, lr, reg = cfg.imaml_steps, cfg.imaml_lr, cfg.imaml_reg

        class Inner(
            difopt.nn.ImplicitMetaGradientModule,
            linear_solve=difopt.linear_solve.solve_cg(maxiter=cfg.imaml_cg),
        ):
            def __init__(self, meta_net: Any) -> None:
                super().__init__()
                self.meta_net = meta_net  # phi (a meta-module: a constructor argument)
                self.net = copy.deepcopy(meta_net)  # theta, initialised at phi

            def forward(self, x: Any) -> Any:
                return self.net(x)

            def objective(self, x: Any, y: Any) -> Any:
                distance = sum(
                    ((theta - phi) ** 2).sum()
                    for theta, phi in zip(self.net.parameters(), self.meta_net.parameters())
                )
                return _ce(self.net(x), y) + 0.5 * reg * distance

            def solve(self, x: Any, y: Any) -> None:
                import torch

                params = list(self.net.parameters())
                for _ in range(steps):
                    with torch.enable_grad():  # solve() runs without grad mode, as TorchOpt's
                        grads = torch.autograd.grad(self.objective(x, y), params)
                    with torch.no_grad():
                        for p, g in zip(params, grads):
                            p.sub_(g, alpha=lr)

        self.inner_cls = Inner

    def eval_steps(self) -> int:
        return self.cfg.imaml_steps

    def eval_step_size(self) -> float | None:
        return self.cfg.imaml_lr

    def task_backward(self, task: Task, weight: float) -> None:
        inner = self.inner_cls(self.net)
        inner.solve(task.xs, task.ys)
        (weight * _ce(inner(task.xq), task.yq)).backward()


class ESMAML(Learner):
    method = "es-maml"

    def setup(self) -> None:
        import torch

        import difopt

        cfg = self.cfg

        def adapted_query_loss(params: tuple, xs: Any, ys: Any, xq: Any, yq: Any) -> Any:
            with torch.enable_grad():  # the inner loop differentiates the support loss
                ps = tuple(p.detach().requires_grad_() for p in params)
                for _ in range(cfg.inner_steps):
                    grads = torch.autograd.grad(_ce(mlp(ps, xs), ys), ps)
                    ps = tuple(
                        (p - cfg.inner_lr * g).detach().requires_grad_() for p, g in zip(ps, grads)
                    )
            with torch.no_grad():
                return _ce(mlp(ps, xq), yq)

        noise = getattr(cfg, "es_distribution", None) or torch.distributions.Normal(0.0, 1.0)
        self.loss = difopt.diff.zero_order(
            noise,
            method="antithetic",
            num_samples=cfg.es_samples,
            sigma=cfg.es_sigma,
            generator=cfg.seed + 7,
        )(adapted_query_loss)

    def task_backward(self, task: Task, weight: float) -> None:
        params = tuple(self.net.parameters())
        (weight * self.loss(params, task.xs, task.ys, task.xq, task.yq)).backward()


def build_learners(init_state: dict, cfg: Any, peers: dict[str, Any]) -> dict[str, Learner]:
    import difopt

    out: list[Learner] = [
        MetaOptimizerMAML(init_state, cfg, difopt.MetaSGD, "difopt"),
        FunctionalFOMAML(init_state, cfg, difopt, "difopt"),
        ANIL(init_state, cfg),
        MetaSGDLearner(init_state, cfg),
        IMAML(init_state, cfg),
        ESMAML(init_state, cfg),
    ]
    if peers.get("torchopt") is not None:
        torchopt = peers["torchopt"]
        out.append(MetaOptimizerMAML(init_state, cfg, torchopt.MetaSGD, "torchopt"))
        out.append(FunctionalFOMAML(init_state, cfg, torchopt, "torchopt"))
    if peers.get("higher") is not None:
        out.append(HigherMAML(init_state, cfg, peers["higher"]))
        out.append(HigherMAML(init_state, cfg, peers["higher"], first_order=True))
    out.append(TorchMAML(init_state, cfg))  # the floor: MAML without a library
    return {learner.key: learner for learner in out}


# ----------------------------------------------------------------------------- evaluation


def adapt_and_score(learner: Learner, task: Task, adapt: bool = True) -> float:
    """Query accuracy after the learner's own adaptation rule, written out by hand."""
    import torch

    names = learner.names
    phi = [p.detach() for p in learner.net.parameters()]
    params = list(phi)
    if adapt:
        which = [
            i
            for i, n in enumerate(names)
            if learner.adapt_names is None or n in learner.adapt_names
        ]
        lrs = learner.eval_lrs()
        step = learner.eval_step_size()
        for _ in range(learner.eval_steps()):
            leaves = [params[i].requires_grad_() for i in which]
            loss = _ce(mlp(params, task.xs), task.ys)
            if learner.reg:
                loss = loss + 0.5 * learner.reg * sum(
                    ((params[i] - phi[i]) ** 2).sum() for i in which
                )
            grads = torch.autograd.grad(loss, leaves)
            for i, g in zip(which, grads):
                rate = step if step is not None else lrs[names[i]]
                params[i] = (params[i] - rate * g).detach()
    with torch.no_grad():
        pred = mlp(params, task.xq).argmax(-1)
    return float((pred == task.yq).float().mean())


def accuracy(learner: Learner, tasks: list[Task], adapt: bool = True) -> dict[str, float]:
    accs = [adapt_and_score(learner, t, adapt) for t in tasks]
    mean = statistics.fmean(accs)
    sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
    return {"mean": mean, "ci95": 1.96 * sd / math.sqrt(len(accs)), "n": len(accs)}


# ----------------------------------------------------------------------------- checks


def oracle_meta_grad(init_state: dict, cfg: Any, task: Task, first_order: bool) -> list[Any]:
    """Unrolled SGD written out on a functional call (torch only): MAML's meta-gradient, or
    the first-order one (the query gradient at the adapted weights)."""
    import torch

    net = make_net(cfg.hidden)
    net.load_state_dict(init_state)
    phi = [p.detach().clone().requires_grad_() for p in net.parameters()]
    params = list(phi)
    for _ in range(cfg.inner_steps):
        loss = _ce(mlp(params, task.xs), task.ys)
        grads = torch.autograd.grad(loss, params, create_graph=not first_order)
        lr = cfg.fo_inner_lr if first_order else cfg.inner_lr
        params = [p - lr * g for p, g in zip(params, grads)]
        if first_order:
            params = [p.detach().requires_grad_() for p in params]
    loss = _ce(mlp(params, task.xq), task.yq)
    return list(torch.autograd.grad(loss, phi if not first_order else params))


def rel_err(a: list[Any], b: list[Any]) -> float:
    import torch

    fa, fb = torch.cat([x.flatten() for x in a]), torch.cat([x.flatten() for x in b])
    return float((fa - fb).norm() / fb.norm())


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    p = _bench.parser(__doc__.splitlines()[0])
    p.add_argument("--meta-iters", type=int, default=None, help="meta-iterations per run")
    p.add_argument("--meta-batch", type=int, default=4, help="tasks per meta-iteration")
    p.add_argument("--inner-steps", type=int, default=3, help="inner SGD steps (train and test)")
    p.add_argument("--inner-lr", type=float, default=0.5, help="inner SGD learning rate")
    p.add_argument(
        "--fo-inner-lr", type=float, default=0.2, help="FO-MAML's inner SGD learning rate"
    )
    p.add_argument("--outer-lr", type=float, default=3e-3, help="outer Adam learning rate")
    p.add_argument("--hidden", type=int, default=64, help="hidden width of the MLP")
    p.add_argument("--shots", type=int, nargs="+", default=[1, 5], help="K of the 5-way tasks")
    p.add_argument("--n-query", type=int, default=15, help="query images per class")
    p.add_argument("--test-tasks", type=int, default=None, help="meta-test tasks (>= 1000)")
    p.add_argument("--val-tasks", type=int, default=None, help="meta-validation tasks per point")
    p.add_argument("--val-every", type=int, default=None, help="meta-iterations between points")
    p.add_argument("--timing-iters", type=int, default=None, help="meta-iterations per block")
    p.add_argument("--imaml-reg", type=float, default=1.0, help="iMAML proximal strength")
    p.add_argument("--imaml-steps", type=int, default=10, help="iMAML inner gradient steps")
    p.add_argument("--imaml-lr", type=float, default=0.1, help="iMAML inner step size")
    p.add_argument("--imaml-cg", type=int, default=5, help="iMAML CG iterations (backward)")
    p.add_argument("--es-samples", type=int, default=8, help="ES-MAML antithetic directions")
    p.add_argument("--es-sigma", type=float, default=0.02, help="ES-MAML smoothing radius")
    p.add_argument("--seed", type=int, default=0, help="seed of the initial weights and tasks")
    p.add_argument("--png", type=Path, default=None, help="plot path (default: beside --out)")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    p.set_defaults(threads=1)
    args = p.parse_args(argv)
    q = args.quick
    args.meta_iters = args.meta_iters or (20 if q else 300)
    args.test_tasks = args.test_tasks or (100 if q else 1000)
    args.val_tasks = args.val_tasks or (20 if q else 100)
    args.val_every = args.val_every or (10 if q else 30)
    args.timing_iters = args.timing_iters or (2 if q else 3)
    repeats = args.repeats or (3 if q else 7)
    warmup = args.warmup if args.warmup is not None else 1
    for name in ("meta_iters", "meta_batch", "inner_steps", "test_tasks", "val_tasks"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")

    import torch

    _bench.set_threads(args.threads)
    warnings.filterwarnings("ignore", message=".*ConvergenceWarning.*")
    import difopt

    warnings.filterwarnings("ignore", category=difopt.linalg.ConvergenceWarning)  # iMAML's CG
    try:
        from tqdm import tqdm
    except ImportError:  # the benchmark runs without it
        tqdm = None  # type: ignore[assignment]

    peers: dict[str, Any] = {}
    peer_status: dict[str, str] = {}
    for name in PEERS:
        peers[name], why = _bench.try_import(name)
        if why:
            peer_status[name] = why
    peer_status["learn2learn"] = (
        "skipped (pip install learn2learn==0.2.0 fails on Python 3.11: the C files of its sdist, "
        "generated by an old Cython, include longintrepr.h, which Python 3.11 removed)"
    )

    env = _bench.environment(args.threads)
    _bench.quick_note(q)
    print(
        f"few-shot digits: {N_WAY}-way {args.shots}-shot, {args.n_query} query/class, MLP 64-"
        f"{args.hidden}-{args.hidden}-{N_WAY}, {args.meta_iters} meta-iterations x "
        f"{args.meta_batch} tasks, {args.inner_steps} inner steps (lr {args.inner_lr}), outer "
        f"Adam lr {args.outer_lr}, {args.test_tasks} test tasks, threads="
        f"{torch.get_num_threads()}; torch {env['torch']}, TorchOpt {env['torchopt']}, "
        f"higher {env['higher']}"
    )
    for name, why in peer_status.items():
        print(f"  {name}: {why}")

    data = FewShotDigits(split_seed=args.seed)
    torch.manual_seed(args.seed)
    init_state = copy.deepcopy(make_net(args.hidden).state_dict())

    results: dict[str, Any] = {"runs": {}, "times": {}, "checks": [], "targets": []}
    checks: list[dict] = results["checks"]
    targets: list[dict] = results["targets"]
    curves: dict[int, dict[str, list[tuple[int, float]]]] = {}
    failed_margin: list[str] = []
    t_start = time.perf_counter()

    for shots in args.shots:
        seed = args.seed + 1000 * shots
        train = data.sampler("train", N_WAY, shots, args.n_query, seed + 1)
        batches = [train.tasks(args.meta_batch) for _ in range(args.meta_iters)]
        val_tasks = data.sampler("val", N_WAY, shots, args.n_query, seed + 2).tasks(args.val_tasks)
        test_tasks = data.sampler("test", N_WAY, shots, args.n_query, seed + 3).tasks(
            args.test_tasks
        )
        learners = build_learners(init_state, args, peers)

        # checks: meta-gradients at the initial weights against the oracle
        task = batches[0][0]
        for first_order, method in ((False, "maml"), (True, "fo-maml")):
            want = oracle_meta_grad(init_state, args, task, first_order)
            for key, learner in learners.items():
                if learner.method != method:
                    continue
                err = rel_err(learner.meta_grad(task), want)
                checks.append(
                    {
                        "name": f"{shots}-shot {key} meta-gradient vs oracle (rel. err "
                        f"{err:.1e} <= {GRAD_RTOL:g})",
                        "ok": err <= GRAD_RTOL,
                        "value": err,
                    }
                )
        second = rel_err(
            oracle_meta_grad(init_state, args, task, False),
            oracle_meta_grad(init_state, args, task, True),
        )
        checks.append(
            {
                "name": f"{shots}-shot MAML and first-order MAML meta-gradients differ "
                f"(rel. {second:.2f})",
                "ok": second > 1e-3,
                "value": second,
            }
        )

        # training, with the meta-validation curve
        random_init = learners["difopt:maml"]
        rnd = accuracy(random_init, test_tasks)  # before training: a random init, adapted
        curves[shots] = {}
        for key, learner in learners.items():
            curve = [(0, accuracy(learner, val_tasks)["mean"])]
            it = range(1, args.meta_iters + 1)
            bar = None
            if tqdm is not None and not args.no_progress:
                bar = tqdm(it, desc=f"{shots}-shot {key}", leave=False, file=sys.stdout)
                it = bar
            for i in it:
                learner.meta_step(batches[i - 1])
                if i % args.val_every == 0 or i == args.meta_iters:
                    curve.append((i, accuracy(learner, val_tasks)["mean"]))
                    if bar is not None:
                        bar.set_postfix(val=f"{curve[-1][1]:.3f}")
            if bar is not None:
                bar.close()
            curves[shots][key] = curve
            adapted = accuracy(learner, test_tasks)
            unadapted = accuracy(learner, test_tasks, adapt=False)
            margin = adapted["mean"] - unadapted["mean"]
            results["runs"][f"{shots}-shot {key}"] = {
                "shots": shots,
                "method": learner.method,
                "library": learner.library,
                "test": adapted,
                "unadapted": unadapted,
                "margin": margin,
                "val_curve": curve,
                "random_init_adapted": rnd,
            }
            if margin < MARGIN:
                failed_margin.append(f"{shots}-shot {key}")
            checks.append(
                {
                    "name": f"{shots}-shot {key} beats the un-adapted baseline by >= {MARGIN}",
                    "ok": margin >= MARGIN,
                    "value": margin,
                }
            )

        # timing: blocks of meta-iterations, contenders interleaved
        timers = build_learners(init_state, args, peers)
        pool = batches[: max(args.timing_iters * 4, 8)]

        def block(learner: Learner, pool: list, counter: list[int]) -> Callable[[], None]:
            def run() -> None:
                for _ in range(args.timing_iters):
                    learner.meta_step(pool[counter[0] % len(pool)])
                    counter[0] += 1

            return run

        errors: dict[str, str] = {}
        times = _bench.interleaved(
            {k: block(v, pool, [0]) for k, v in timers.items()},
            repeats=repeats,
            warmup=warmup,
            errors=errors,
        )
        per_iter = {k: [s / args.timing_iters for s in v] for k, v in times.items()}
        results["times"][str(shots)] = {
            k: {**_bench.summary(v), "samples_s": v} for k, v in per_iter.items()
        }
        for k, e in errors.items():
            results["times"][str(shots)][k] = {"status": e}

        # targets
        runs = results["runs"]
        own = runs[f"{shots}-shot difopt:maml"]["test"]
        for peer in PEERS:
            key = f"{shots}-shot {peer}:maml"
            if key in runs:
                diff = abs(runs[key]["test"]["mean"] - own["mean"])
                targets.append(
                    {
                        "name": f"{shots}-shot |acc difopt MAML - {peer} MAML| / CI95",
                        "limit": 1.0,
                        "op": "<=",
                        "value": diff / own["ci95"],
                        "status": "PASS" if diff <= own["ci95"] else "FAIL",
                    }
                )
            else:
                targets.append(
                    _bench.target(
                        f"{shots}-shot |acc difopt MAML - {peer} MAML| / CI95",
                        None,
                        1.0,
                        peer_status.get(peer, ""),
                    )
                )
            targets.append(
                _bench.target(
                    f"{shots}-shot time difopt MAML / {peer} MAML",
                    _bench.ratio(per_iter, "difopt:maml", f"{peer}:maml"),
                    TIME_TARGET_PEERS,
                    peer_status.get(peer, errors.get(f"{peer}:maml", "")),
                )
            )
        floor = _bench.ratio(per_iter, "torch:maml", "torchopt:maml")
        if floor is not None:
            print(
                f"{shots}-shot time of MAML written out with torch alone / TorchOpt MAML: "
                f"{floor['value']:.2f} (the floor of any library's ratio; information)"
            )
            results["floor"] = {**results.get("floor", {}), str(shots): floor}
        targets.append(
            _bench.target(
                f"{shots}-shot time difopt FO-MAML / difopt MAML",
                _bench.ratio(per_iter, "difopt:fo-maml", "difopt:maml"),
                TIME_TARGET_FO,
            )
        )

        # the table of this shot setting
        print(f"\n{N_WAY}-way {shots}-shot (meta-test: {args.test_tasks} tasks, 95% CI)")
        rows = []
        for key in learners:
            r = runs[f"{shots}-shot {key}"]
            tm = results["times"][str(shots)].get(key, {})
            rows.append(
                [
                    key,
                    f"{100 * r['test']['mean']:.1f} ± {100 * r['test']['ci95']:.1f}",
                    f"{100 * r['unadapted']['mean']:.1f}",
                    f"{100 * r['margin']:+.1f}",
                    f"{1e3 * tm['median_s']:.1f}" if "median_s" in tm else tm.get("status", "-"),
                    f"{1e3 * tm['p25_s']:.1f}..{1e3 * tm['p75_s']:.1f}" if "p25_s" in tm else "-",
                ]
            )
        for peer, why in peer_status.items():
            if peers.get(peer) is None:
                rows.append([f"{peer}:maml, {peer}:fo-maml", why])
        print(
            _bench.table(
                rows,
                [
                    "library:method",
                    "test acc %",
                    "un-adapted %",
                    "margin",
                    "ms/meta-iter",
                    "p25..p75",
                ],
            )
        )
        print(
            f"random init adapted by the MAML rule (no meta-training, information): "
            f"{100 * rnd['mean']:.1f} ± {100 * rnd['ci95']:.1f} %"
        )

    print(f"\ntotal {time.perf_counter() - t_start:.0f} s")
    print("\nChecks:")
    for c in checks:
        print(f"  {'ok  ' if c['ok'] else 'FAIL'} {c['name']}")
    _bench.print_targets(targets)

    png = args.png or (args.out.parent if args.out else _bench.RESULTS_DIR) / f"{NAME}.png"
    try:
        plot(curves, png, args)
        results["png"] = str(png)
    except ImportError as exc:
        print(f"(no plot: {exc})")
    _bench.write_json(
        NAME,
        {"quick": q, "config": vars(args), "environment": env, "peers": peer_status, **results},
        args.out,
    )
    ok = all(c["ok"] for c in checks)
    if failed_margin:
        print(f"FAIL: below the baseline margin {MARGIN}: {', '.join(failed_margin)}")
    elif ok:
        print("OK: every method beats the un-adapted baseline by a clear margin; checks pass")
    return 0 if ok else 1


def plot(curves: dict[int, dict[str, list[tuple[int, float]]]], path: Path, args: Any) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(6 * len(curves), 4.2), squeeze=False)
    for ax, (shots, by_key) in zip(axes[0], curves.items()):
        for key, curve in by_key.items():
            xs, ys = zip(*curve)
            style = "-" if key.startswith("difopt") else "--"
            ax.plot(xs, [100 * y for y in ys], style, label=key, marker=".")
        ax.set_title(f"{N_WAY}-way {shots}-shot rotated digits")
        ax.set_xlabel("meta-iteration")
        ax.set_ylabel(f"meta-validation accuracy (%), {args.val_tasks} tasks")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
