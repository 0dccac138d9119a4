"""The package installs, speaks core's plugin API, and its entry point loads."""

import importlib.metadata as md
from pathlib import Path

import pytest
import torch

import difopt
import difopt_accel
from difopt import registry

DIST = "difopt-accel"


def test_installed_version_is_the_module_version() -> None:
    assert md.version(DIST) == difopt_accel.__version__


def test_imported_from_the_installed_package_not_the_source_tree() -> None:
    source = Path(__file__).resolve().parents[1] / "src"
    assert source not in Path(difopt_accel.__file__).resolve().parents


def test_plugin_api_major_version_matches_core() -> None:
    ours = difopt_accel.DIFOPT_PLUGIN_API.split(".")[0]
    assert ours == registry.PLUGIN_API_VERSION.split(".")[0]


def test_every_declared_entry_point_loads() -> None:
    declared = [ep for ep in md.distribution(DIST).entry_points if ep.group in registry.GROUPS]
    assert {(ep.group, ep.name) for ep in declared} == {
        ("difopt.ops", "adam"),
        ("difopt.ops", "rmsprop"),
        ("difopt.ops", "sgd"),
        ("difopt.ops", "anderson"),  # difopt-implicit's Anderson(use_accelerated_op=True)
    }
    for ep in declared:
        assert registry.load(ep.group, ep.name) is difopt_accel.ops
    assert {(p.group, p.name) for p in difopt.plugins() if p.distribution == DIST} == {
        (ep.group, ep.name) for ep in declared
    }


# entry point -> the factories core calls on it, with the pure transformation's arguments
PROVIDED = {
    "adam": [("scale_by_adam", (0.9, 0.999, 1e-8, 0.0, False))],
    "rmsprop": [("scale_by_rms", (0.9, 1e-8, 0.0)), ("scale_by_stddev", (0.9, 1e-8, 0.0))],
    "sgd": [("trace", (0.9, 0.0, False, False))],
}


@pytest.mark.parametrize("op", PROVIDED)
def test_provider_contract(op: str) -> None:
    provider = registry.op_provider(op)
    assert provider is difopt_accel.ops
    assert provider.is_available(torch.device("cpu"))
    for method, args in PROVIDED[op]:
        t = getattr(provider, method)(*args)
        assert isinstance(t, difopt.base.GradientTransformation)
        assert t.properties.apply_scaled is not None  # offers apply_scaled
        assert t == getattr(difopt_accel, method)(*args)


def test_former_provider_class_name() -> None:
    assert difopt_accel.AdamOps is difopt_accel.FusedOps
    assert isinstance(difopt_accel.ops, difopt_accel.AdamOps)


@pytest.mark.parametrize("name", difopt_accel.__all__)
def test_every_public_name_resolves(name: str) -> None:
    assert getattr(difopt_accel, name) is not None


def test_availability_by_device() -> None:
    assert difopt_accel.is_available() and difopt_accel.is_available("cpu")
    assert difopt.accelerated_op_available("cpu")
    assert not difopt_accel.is_available("meta")
    assert difopt_accel.is_available("cuda") == (
        difopt_accel._ops._C.WITH_CUDA and torch.cuda.is_available()
    )


def test_build_matches_the_installed_torch() -> None:
    from difopt_accel import _build

    assert _build.TORCH_VERSION == torch.__version__
    assert difopt_accel._ops._C.TORCH_VERSION == torch.__version__
    assert _build.WITH_CUDA == difopt_accel._ops._C.WITH_CUDA
    assert difopt_accel._ops._C.WITH_OPENMP


@pytest.mark.parametrize(
    ("name", "kwargs", "shown"),
    [
        ("scale_by_adam", {"b1": 0.8}, "scale_by_adam(b1=0.8"),
        ("scale_by_rms", {"alpha": 0.8}, "scale_by_rms(alpha=0.8"),
        ("scale_by_stddev", {"alpha": 0.8}, "scale_by_stddev(alpha=0.8"),
        ("trace", {"momentum": 0.8}, "trace(momentum=0.8"),
    ],
)
def test_transformation_reprs_compares_and_pickles(name: str, kwargs: dict, shown: str) -> None:
    import pickle

    t = getattr(difopt_accel, name)(**kwargs)
    assert shown in repr(t)
    assert t == getattr(difopt_accel, name)(**kwargs)
    assert pickle.loads(pickle.dumps(t)) == t


@pytest.mark.parametrize(
    ("name", "kwargs", "argument"),
    [
        ("scale_by_adam", {"b1": 1.5}, "b1"),
        ("scale_by_adam", {"eps_root": -1.0}, "eps_root"),
        ("scale_by_rms", {"alpha": 1.5}, "alpha"),
        ("scale_by_rms", {"eps": -1.0}, "eps"),
        ("scale_by_stddev", {"initial_scale": -1.0}, "initial_scale"),
        ("trace", {"momentum": -0.1}, "momentum"),
        ("trace", {"dampening": 2.0}, "dampening"),
        ("trace", {"nesterov": True, "dampening": 0.5}, "nesterov"),
    ],
)
def test_bad_hyper_parameters_are_rejected_by_name(name: str, kwargs: dict, argument: str) -> None:
    with pytest.raises(ValueError, match=argument):
        getattr(difopt_accel, name)(**kwargs)
