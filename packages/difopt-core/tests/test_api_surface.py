"""TorchOpt 0.7.3's public surface exists in difopt; every name in every __all__ resolves."""

from __future__ import annotations

import importlib
import inspect

import pytest

import difopt
from core_testing import run_python
from difopt import registry

# TorchOpt 0.7.3: module path -> the public names it exports (its __all__ lists).
TORCHOPT_SURFACE = {
    "difopt": [
        "accelerated_op_available",
        "adam",
        "adamax",
        "adadelta",
        "radam",
        "adamw",
        "adagrad",
        "rmsprop",
        "sgd",
        "clip_grad_norm",
        "nan_to_num",
        "register_hook",
        "chain",
        "Optimizer",
        "SGD",
        "Adam",
        "AdaMax",
        "Adamax",
        "AdaDelta",
        "Adadelta",
        "RAdam",
        "AdamW",
        "AdaGrad",
        "Adagrad",
        "RMSProp",
        "RMSprop",
        "MetaOptimizer",
        "MetaSGD",
        "MetaAdam",
        "MetaAdaMax",
        "MetaAdamax",
        "MetaAdaDelta",
        "MetaAdadelta",
        "MetaRAdam",
        "MetaAdamW",
        "MetaAdaGrad",
        "MetaAdagrad",
        "MetaRMSProp",
        "MetaRMSprop",
        "FuncOptimizer",
        "apply_updates",
        "extract_state_dict",
        "recover_state_dict",
        "stop_gradient",
        "module_clone",
        "module_detach_",
        # submodules
        "accelerated_op",
        "alias",
        "base",
        "clip",
        "combine",
        "diff",
        "distributed",
        "hook",
        "linalg",
        "linear_solve",
        "nn",
        "optim",
        "pytree",
        "schedule",
        "transform",
        "typing",
        "update",
        "utils",
        "version",
        "visual",
    ],
    "difopt.alias": ["adagrad", "radam", "adam", "adamax", "adadelta", "adamw", "rmsprop", "sgd"],
    "difopt.base": [
        "EmptyState",
        "UninitializedState",
        "GradientTransformation",
        "ChainedGradientTransformation",
        "identity",
    ],
    "difopt.combine": ["chain", "chain_flat"],
    "difopt.hook": ["zero_nan_hook", "nan_to_num_hook", "register_hook"],
    "difopt.clip": ["clip_grad_norm"],
    "difopt.update": ["apply_updates"],
    "difopt.utils": [
        "ModuleState",
        "stop_gradient",
        "extract_state_dict",
        "recover_state_dict",
        "module_clone",
        "module_detach_",
    ],
    "difopt.pytree": [
        "tree_flatten_as_tuple",
        "tree_pos",
        "tree_neg",
        "tree_add",
        "tree_add_scalar_mul",
        "tree_sub",
        "tree_sub_scalar_mul",
        "tree_mul",
        "tree_matmul",
        "tree_scalar_mul",
        "tree_truediv",
        "tree_vdot_real",
        "tree_wait",
        "tree_map",
        "tree_flatten",
        "tree_unflatten",
        "tree_leaves",
        "tree_structure",
    ],
    "difopt.typing": [
        "GradientTransformation",
        "ChainedGradientTransformation",
        "EmptyState",
        "UninitializedState",
        "Params",
        "Updates",
        "OptState",
        "Scalar",
        "Numeric",
        "Schedule",
        "ScalarOrSchedule",
        "PyTree",
        "Tensor",
        "OptionalTensor",
        "ListOfTensors",
        "TupleOfTensors",
        "SequenceOfTensors",
        "TensorOrTensors",
        "TensorTree",
        "ListOfOptionalTensors",
        "TupleOfOptionalTensors",
        "SequenceOfOptionalTensors",
        "OptionalTensorOrOptionalTensors",
        "OptionalTensorTree",
        "TensorContainer",
        "ModuleTensorContainers",
        "Future",
        "LinearSolver",
        "Device",
        "Size",
        "Distribution",
        "SampleFunc",
        "Samplable",
    ],
    "difopt.schedule": ["exponential_decay", "polynomial_schedule", "linear_schedule"],
    "difopt.transform": [
        "trace",
        "scale",
        "scale_by_schedule",
        "add_decayed_weights",
        "masked",
        "scale_by_adam",
        "scale_by_adamax",
        "scale_by_adadelta",
        "scale_by_radam",
        "scale_by_accelerated_adam",
        "scale_by_rss",
        "scale_by_rms",
        "scale_by_stddev",
        "nan_to_num",
    ],
    "difopt.optim": [
        "meta",
        "AdaDelta",
        "Adadelta",
        "AdaGrad",
        "Adagrad",
        "Adam",
        "AdaMax",
        "Adamax",
        "AdamW",
        "Optimizer",
        "FuncOptimizer",
        "RAdam",
        "RMSProp",
        "RMSprop",
        "SGD",
    ],
    "difopt.optim.meta": [
        "MetaAdaDelta",
        "MetaAdadelta",
        "MetaAdaGrad",
        "MetaAdagrad",
        "MetaAdam",
        "MetaAdaMax",
        "MetaAdamax",
        "MetaAdamW",
        "MetaOptimizer",
        "MetaRAdam",
        "MetaRMSProp",
        "MetaRMSprop",
        "MetaSGD",
    ],
    "difopt.optim.func": ["FuncOptimizer"],
    "difopt.nn": ["MetaGradientModule", "reparametrize", "reparameterize", "swap_state"],
    "difopt.accelerated_op": ["is_available", "AdamOp", "adam_op"],
    "difopt.accelerated_op.adam_op": ["AdamOp"],
    "difopt.version": ["__version__"],
}

# Paths whose contents come from a plugin: (module, names, entry group, entry name, package).
PLUGIN_SURFACE = [
    (
        "difopt.diff.implicit",
        ["custom_root", "ImplicitMetaGradientModule"],
        "difopt.diff",
        "implicit",
        "difopt-implicit",
    ),
    (
        "difopt.diff.zero_order",
        ["zero_order", "ZeroOrderGradientModule"],
        "difopt.diff",
        "zero_order",
        "difopt-zeroorder",
    ),
    (
        "difopt.diff.unroll",
        ["unroll", "unroll_module", "Binomial"],
        "difopt.diff",
        "unroll",
        "difopt-unroll",
    ),
    (
        "difopt.diff.implicit",
        ["fixed_point", "root", "DEQ"],
        "difopt.diff",
        "implicit",
        "difopt-implicit",
    ),
    (
        "difopt.linear_solve",
        ["solve_cg", "solve_normal_cg", "solve_inv"],
        "difopt.diff",
        "implicit",
        "difopt-implicit",
    ),
    ("difopt.linalg", ["cg", "ns", "ns_inv"], "difopt.diff", "implicit", "difopt-implicit"),
    ("difopt.linalg", ["utils"], "difopt.diff", "implicit", "difopt-implicit"),
    (
        "difopt.diff.implicit.nn",
        ["ImplicitMetaGradientModule"],
        "difopt.diff",
        "implicit",
        "difopt-implicit",
    ),
    (
        "difopt.diff.zero_order.nn",
        ["ZeroOrderGradientModule"],
        "difopt.diff",
        "zero_order",
        "difopt-zeroorder",
    ),
    (
        "difopt.distributed.api",
        ["parallelize", "remote_async_call", "TensorDimensionPartitioner", "mean_reducer"],
        "difopt.distributed",
        "distributed",
        "difopt-distributed",
    ),
    (
        "difopt.distributed.world",
        ["auto_init_rpc", "get_world_info", "rank_zero_only"],
        "difopt.distributed",
        "distributed",
        "difopt-distributed",
    ),
    ("difopt.nn", ["ImplicitMetaGradientModule"], "difopt.diff", "implicit", "difopt-implicit"),
    ("difopt.nn", ["ZeroOrderGradientModule"], "difopt.diff", "zero_order", "difopt-zeroorder"),
    ("difopt.diff", ["ImplicitMetaGradientModule"], "difopt.diff", "implicit", "difopt-implicit"),
    ("difopt.visual", ["make_dot", "resize_graph"], "difopt.visual", "visual", "difopt-visual"),
    (
        "difopt.distributed.autograd",
        ["context", "backward", "grad", "get_gradients"],
        "difopt.distributed",
        "distributed",
        "difopt-distributed",
    ),
    (
        "difopt.pytree",
        ["tree_as_rref", "tree_to_here"],
        "difopt.distributed",
        "distributed",
        "difopt-distributed",
    ),
    (
        "difopt.distributed",
        [
            "is_available",
            "auto_init_rpc",
            "parallelize",
            "get_rank",
            "dim_partitioner",
            "mean_reducer",
        ],
        "difopt.distributed",
        "distributed",
        "difopt-distributed",
    ),
]


@pytest.mark.parametrize("module", sorted(TORCHOPT_SURFACE))
def test_torchopt_names_exist(module):
    mod = importlib.import_module(module)
    missing = [n for n in TORCHOPT_SURFACE[module] if not hasattr(mod, n)]
    assert not missing, f"{module} lacks {missing}"


@pytest.mark.parametrize(
    "module,names,group,entry,package",
    PLUGIN_SURFACE,
    ids=[f"{m}:{n[0]}" for m, n, *_ in PLUGIN_SURFACE],
)
def test_plugin_backed_names(module, names, group, entry, package):
    # (difopt.distributed.autograd is a module of core's own, lazy inside: the row for
    # difopt.distributed.autograd checks its names.)
    mod = importlib.import_module(module)
    installed = entry in registry.names(group)
    for name in names:
        if installed:
            assert getattr(mod, name) is not None
        else:
            with pytest.raises(registry.PluginNotInstalledError, match=package):
                getattr(mod, name)


CORE_MODULES = [
    "difopt",
    "difopt.alias",
    "difopt.base",
    "difopt.clip",
    "difopt.combine",
    "difopt.hook",
    "difopt.nn",
    "difopt.optim",
    "difopt.optim.meta",
    "difopt.optim.func",
    "difopt.pytree",
    "difopt.schedule",
    "difopt.transform",
    "difopt.typing",
    "difopt.update",
    "difopt.utils",
    "difopt.registry",
]


@pytest.mark.parametrize("module", CORE_MODULES)
def test_every_name_in_all_resolves(module):
    mod = importlib.import_module(module)
    unresolved = []
    for name in mod.__all__:
        try:
            getattr(mod, name)
        except registry.PluginNotInstalledError:
            continue  # plugin-backed and not installed here; covered above
        except AttributeError:
            unresolved.append(name)
    assert not unresolved


def test_import_difopt_as_torchopt_runs_torchopt_style_code():
    import torch

    import difopt as torchopt

    net = torch.nn.Linear(3, 1)
    optim = torchopt.MetaAdam(net, lr=0.1)
    x = torch.randn(4, 3)
    net_state = torchopt.extract_state_dict(net, by="reference", detach_buffers=True)
    optim_state = torchopt.extract_state_dict(optim, by="reference")
    for _ in range(2):
        optim.step(net(x).pow(2).mean())
    net(x).sum().backward()
    torchopt.recover_state_dict(net, net_state)
    torchopt.recover_state_dict(optim, optim_state)
    torchopt.stop_gradient(net)
    torchopt.stop_gradient(optim)
    impl = torchopt.chain(torchopt.clip_grad_norm(1.0), torchopt.sgd(0.1))
    params = tuple(net.parameters())
    updates, _ = impl.update(tuple(torch.ones_like(p) for p in params), impl.init(params))
    torchopt.apply_updates(params, updates)


def test_three_forms_share_signature_and_docs():
    """The classic and meta classes are generated from the alias: same parameters and docs."""
    for fn in difopt.alias.OPTIMIZERS:
        classic = getattr(difopt, fn.__difopt_forms__["classic_name"])
        meta = getattr(difopt, fn.__difopt_forms__["meta_name"])
        alias_params = list(inspect.signature(fn).parameters)
        forms = fn.__difopt_forms__
        for cls, first, expected, order in (
            (
                classic,
                "params",
                [p for p in alias_params if p != "moment_requires_grad"],
                forms["classic_positional"],
            ),
            (meta, "module", alias_params, forms["meta_positional"]),
        ):
            got = list(inspect.signature(cls).parameters)
            assert got[0] == first and sorted(got[1:]) == sorted(expected)
            # The alias' order, unless the forms declare TorchOpt's class order (SGD's).
            assert got[1:] == (
                expected if order is None else [*order, *(p for p in expected if p not in order)]
            )
        assert inspect.cleandoc(fn.__doc__) in classic.__doc__
        assert inspect.cleandoc(fn.__doc__) in meta.__doc__
        assert classic.alias is fn and meta.alias is fn
    assert inspect.signature(difopt.Adadelta).parameters["lr"].default == 1.0
    assert inspect.signature(difopt.MetaAdam).parameters["moment_requires_grad"].default is True


def test_the_table_of_optimizers_is_the_installed_entry_points():
    """difopt.alias.OPTIMIZERS (which the namespaces are generated from) and difopt-core's
    difopt.optimizers entry points name the same functions."""
    import importlib.metadata

    eps = importlib.metadata.distribution("difopt-core").entry_points
    declared = {ep.name: ep.load() for ep in eps if ep.group == "difopt.optimizers"}
    assert declared == {fn.__name__: fn for fn in difopt.alias.OPTIMIZERS}


def test_every_optimizer_of_the_table_has_its_three_forms_everywhere():
    for fn in difopt.alias.OPTIMIZERS:
        forms = fn.__difopt_forms__
        classic, meta = difopt.optim.classic_class(fn), difopt.optim.meta_class(fn)
        assert getattr(difopt, fn.__name__) is fn and fn.__name__ in difopt.__all__
        for name in (forms["classic_name"], *forms["spellings"]):
            assert getattr(difopt, name) is classic and getattr(difopt.optim, name) is classic
            assert name in difopt.__all__ and name in difopt.optim.__all__
            meta_name = "Meta" + name
            assert getattr(difopt, meta_name) is meta
            assert getattr(difopt.optim.meta, meta_name) is meta
            assert meta_name in difopt.__all__ and meta_name in difopt.optim.meta.__all__
        assert meta.__name__ == forms["meta_name"]


def test_torchopt_module_paths_import_without_loading_plugins():
    code = (
        "import sys, difopt\n"
        "import difopt.diff.implicit.nn, difopt.diff.zero_order.nn\n"
        "import difopt.distributed.api, difopt.distributed.world\n"
        "from difopt.accelerated_op.adam_op import AdamOp\n"
        "assert difopt.chain.flat is difopt.combine.chain_flat\n"
        "print(sorted(m for m in sys.modules if m.startswith('difopt_')))\n"
    )
    assert run_python("-c", code).stdout.strip() == "[]"
