"""Development sessions of the difopt monorepo.

Every package listed in ``PACKAGES`` gets the same family of sessions (``tests``,
``doctests``, ``lint``, ``typecheck``, and ``check``, which runs the first three of those in one
environment); ``ci`` fans out to ``check`` for every package. ``examples``, ``demo``, ``docs``
and ``bench`` work on the repository as a whole.

    nox -s ci                                    # what CI runs (also plain ``nox``)
    nox -s "tests(package='difopt-core')" -- -k adam -x
    nox -s examples | demo | docs | bench
    nox -l                                       # list every session

Each session builds a fresh virtual environment with ``venv`` and pip (pip finds the local
PyTorch wheel; uv and poetry do not), and every install goes through ``constraints.txt``, which
pins torch and the tools. Packages are installed non-editable, so the tests exercise the
installed wheel contents, entry points included, not the source tree.
"""

from __future__ import annotations

import pathlib

import nox

nox.needs_version = ">=2024.4.15"
nox.options.default_venv_backend = "venv"
nox.options.sessions = ["ci"]

ROOT = pathlib.Path(__file__).resolve().parent
CONSTRAINTS = ROOT / "constraints.txt"

# The packages of the monorepo (folders under packages/). Adding a package = adding its name.
PACKAGES = (
    "difopt-core",
    "difopt-accel",
    "difopt-distributed",
    "difopt-implicit",
    "difopt-unroll",
    "difopt-visual",
    "difopt-zeroorder",
)
CORE = "difopt-core"
# Packages with native code: built against the torch installed in the session, so without
# pip's build isolation; their build requirements are installed first.
NATIVE = {"difopt-accel": ("scikit-build-core", "pybind11", "cmake", "ninja")}

# Packages installed beside a package for its tests only: difopt-implicit's tests run
# Anderson(use_accelerated_op=True) on difopt-accel's fused kernel.
TEST_COMPANIONS = {"difopt-implicit": ("difopt-accel",)}

# Python files outside packages/, linted by ``lint_repo``.
REPO_PYTHON = ("noxfile.py", "docs", "benchmarks", "examples", "compat")


def _pip(session: nox.Session, *args: str) -> None:
    session.install("-c", str(CONSTRAINTS), *args)


def _package_dir(package: str) -> pathlib.Path:
    return ROOT / "packages" / package


def _import_names(package: str) -> list[str]:
    """The top-level modules a package ships (the folders under its ``src/``)."""
    src = _package_dir(package) / "src"
    return sorted(p.parent.name for p in src.glob("*/__init__.py"))


def _install_package(
    session: nox.Session, package: str, *extras: str, more: tuple[str, ...] = ()
) -> None:
    """Install ``package`` non-editable, with difopt-core from this checkout, and ``more``.

    Plugins depend on ``difopt-core``; naming the local folder in the same pip call makes pip
    take it from here instead of looking for it on an index.
    """
    suffix = f"[{','.join(extras)}]" if extras else ""
    targets = [f"{_package_dir(package)}{suffix}"]
    if package != CORE:
        targets.insert(0, str(_package_dir(CORE)))
    native = [name for name in NATIVE if name == package or str(_package_dir(name)) in more]
    if not native:
        _pip(session, "torch", *targets, *more)
        return
    # No build isolation: every build backend must already be in the session.
    build_requires = {"hatchling"} | {req for name in native for req in NATIVE[name]}
    _pip(session, "torch", *sorted(build_requires))
    session.env["CMAKE_BUILD_PARALLEL_LEVEL"] = "2"
    _pip(session, "--no-build-isolation", *targets, *more)


_CHECK_INSTALLED = """
import importlib, pathlib, sys
src_tree = pathlib.Path(sys.argv[1])
for name in sys.argv[2:]:
    module = importlib.import_module(name)
    where = pathlib.Path(module.__file__).resolve()
    if src_tree in where.parents:
        sys.exit(f"{name} was imported from the source tree ({where}), not the installed package")
    print(f"testing {name} {getattr(module, '__version__', '')} installed at {where.parent}")
"""


def _fixtures(package: str) -> tuple[str, ...]:
    """Test-only plugin packages that declare entry points (see tests/fixtures/README.md), and
    the monorepo packages the tests use beside this one (``TEST_COMPANIONS``)."""
    fixtures = (_package_dir(package) / "tests" / "fixtures").glob("*/pyproject.toml")
    companions = [str(_package_dir(name)) for name in TEST_COMPANIONS.get(package, ())]
    return (*sorted(str(p.parent) for p in fixtures), *companions)


def _run_tests(session: nox.Session, package: str) -> None:
    session.run("python", "-c", _CHECK_INSTALLED, str(ROOT / "packages"), *_import_names(package))
    session.run(
        "pytest",
        str(_package_dir(package) / "tests"),
        "--import-mode=importlib",
        "-p",
        "no:cacheprovider",
        *session.posargs,
    )


def _run_lint(session: nox.Session, package: str) -> None:
    pkg_dir = str(_package_dir(package))
    session.run("ruff", "check", pkg_dir)
    session.run("ruff", "format", "--check", pkg_dir)


def _run_typecheck(session: nox.Session, package: str) -> None:
    cache = pathlib.Path(session.create_tmp()) / "mypy-cache"  # per session: never stale
    session.run(
        "mypy",
        "--config-file",
        str(ROOT / "mypy.ini"),
        "--cache-dir",
        str(cache),
        str(_package_dir(package) / "src"),
    )


@nox.session
@nox.parametrize("package", PACKAGES)
def tests(session: nox.Session, package: str) -> None:
    """Install the package (and its test fixtures) from this checkout and run its tests."""
    _install_package(session, package, "test", more=_fixtures(package))
    _run_tests(session, package)


@nox.session
@nox.parametrize("package", PACKAGES)
def doctests(session: nox.Session, package: str) -> None:
    """Run the examples in the package's docstrings against the installed modules."""
    _install_package(session, package, "test")
    session.run(
        "pytest",
        "--doctest-modules",
        "--pyargs",
        *_import_names(package),
        "-p",
        "no:cacheprovider",
        *session.posargs,
        success_codes=[0, 5],  # 5: the package has no docstring examples
    )


@nox.session
@nox.parametrize("package", PACKAGES)
def lint(session: nox.Session, package: str) -> None:
    """ruff check and ruff format --check on the package (sources, tests, README)."""
    _pip(session, "ruff")
    _run_lint(session, package)


@nox.session
def lint_repo(session: nox.Session) -> None:
    """ruff on the Python files outside packages/ (this file, docs, benchmarks, examples)."""
    _pip(session, "ruff")
    paths = [str(ROOT / p) for p in REPO_PYTHON if (ROOT / p).exists()]
    session.run("ruff", "check", *paths)
    session.run("ruff", "format", "--check", *paths)


@nox.session
@nox.parametrize("package", PACKAGES)
def typecheck(session: nox.Session, package: str) -> None:
    """mypy on the package's sources, with torch and difopt-core installed for their types."""
    _install_package(session, package, more=("mypy",))
    _run_typecheck(session, package)


@nox.session
@nox.parametrize("package", PACKAGES)
def check(session: nox.Session, package: str) -> None:
    """lint, typecheck and tests of one package in one environment (what ``ci`` runs).

    The same steps as the three separate sessions, but torch is installed once per package
    instead of twice: a clean CI run creates one torch environment per package.
    """
    _install_package(session, package, "test", more=(*_fixtures(package), "mypy", "ruff"))
    _run_lint(session, package)
    _run_typecheck(session, package)
    _run_tests(session, package)


@nox.session
def template(session: nox.Session) -> None:
    """Check that packages/_template still installs, lints, typechecks and passes its test."""
    path = ROOT / "packages" / "_template"
    _pip(session, "torch", str(_package_dir(CORE)), f"{path}[test]", "ruff", "mypy")
    session.run("ruff", "check", str(path))
    session.run("ruff", "format", "--check", str(path))
    session.run("mypy", "--config-file", str(ROOT / "mypy.ini"), str(path / "src"))
    session.run("pytest", str(path / "tests"), "--import-mode=importlib", "-p", "no:cacheprovider")


# A third-party optimizer package, outside packages/: what someone who is not a difopt
# developer would publish (one difopt.optimizers entry point, difopt's public API only).
THIRD_PARTY = ROOT / "examples" / "third_party_optimizer"


@nox.session
def third_party(session: nox.Session) -> None:
    """Install examples/third_party_optimizer beside difopt-core and test it: its own tests
    (against pytorch-optimizer's AdEMAMix) and difopt-core's conformance suite, which covers
    every registered optimizer and so this one too."""
    _pip(session, "torch", str(_package_dir(CORE)), f"{THIRD_PARTY}[test]", "ruff", "mypy")
    session.run("ruff", "check", str(THIRD_PARTY))
    session.run("ruff", "format", "--check", str(THIRD_PARTY))
    session.run("mypy", "--config-file", str(ROOT / "mypy.ini"), str(THIRD_PARTY / "src"))
    session.run(
        "pytest",
        str(THIRD_PARTY / "tests"),
        str(_package_dir(CORE) / "tests" / "test_conformance.py"),
        "--import-mode=importlib",
        "-p",
        "no:cacheprovider",
        *session.posargs,
    )


@nox.session(venv_backend="none")
def ci(session: nox.Session) -> None:
    """Everything CI checks: lint, typecheck and tests of every package, the template, the
    third-party optimizer, the examples, TorchOpt 0.7.3's own test suite run against difopt
    (and a TorchOpt program through python -m difopt.compat), and the docs build."""
    for package in PACKAGES:
        session.notify(f"check(package='{package}')")
    session.notify("lint_repo")
    session.notify("template")
    session.notify("third_party")
    session.notify("examples")
    session.notify("torchopt_tests")
    session.notify("docs")


# TorchOpt's sdist on PyPI, whose tests/ folder the torchopt_tests session runs against difopt.
TORCHOPT_SDIST = ("torchopt", "0.7.3")


def _fetch_torchopt_tests(session: nox.Session, dest: pathlib.Path) -> None:
    """Download TorchOpt's sdist with pip (no build, no dependencies) and extract tests/."""
    import tarfile

    name, version = TORCHOPT_SDIST
    download = dest.parent / "sdist"
    session.run(
        "python",
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--no-binary",
        ":all:",
        "--no-build-isolation",  # metadata from setup.py with the session's setuptools
        "--dest",
        str(download),
        f"{name}=={version}",
    )
    (archive,) = download.glob(f"{name}-{version}.tar.gz")
    prefix = f"{name}-{version}/tests/"
    with tarfile.open(archive, mode="r:gz") as tar:
        for member in tar.getmembers():
            rest = member.name[len(prefix) :]
            if member.isfile() and member.name.startswith(prefix) and "/" not in rest:
                extracted = tar.extractfile(member)
                assert extracted is not None
                (dest / rest).write_bytes(extracted.read())


@nox.session
def torchopt_tests(session: nox.Session) -> None:
    """Run TorchOpt 0.7.3's own test suite with ``import torchopt`` resolving to difopt.

    The tests come from TorchOpt's sdist on PyPI (not stored here); compat/torchopt/ holds the
    import alias (conftest.py), the list of tests that check TorchOpt's internals rather than
    its API (expected failures, with reasons), and difopt's own ``helpers`` module.
    """
    plugins = tuple(str(_package_dir(p)) for p in PACKAGES if p != CORE)
    # JAX, jaxopt and optax: the independent oracle of TorchOpt's implicit-differentiation tests.
    oracle = ("jax[cpu]", "jaxopt", "optax")
    _install_package(session, CORE, more=(*plugins, "pytest", "numpy", "setuptools", *oracle))
    import shutil

    work = pathlib.Path(session.create_tmp())
    for old in ("torchopt-tests", "sdist"):
        shutil.rmtree(work / old, ignore_errors=True)
    tests = work / "torchopt-tests"
    tests.mkdir()
    _fetch_torchopt_tests(session, tests)
    for helper in ("conftest.py", "helpers.py"):
        (tests / helper).write_text((ROOT / "compat" / "torchopt" / helper).read_text())
    # TorchOpt's pytest settings (in its pyproject.toml) are not shipped with the tests; ours:
    (tests / "pytest.ini").write_text("[pytest]\n")
    session.run(
        "pytest",
        str(tests),
        "--rootdir",
        str(tests),
        "-p",
        "no:cacheprovider",
        "-q",
        "-W",
        "ignore::DeprecationWarning",
        "-W",
        "ignore::UserWarning",
        *session.posargs,
    )
    # A TorchOpt program of several files, unedited, through `python -m difopt.compat`.
    programs = ROOT / "compat" / "programs"
    session.run("pytest", str(programs), "--rootdir", str(programs), "-p", "no:cacheprovider", "-q")


@nox.session
def demo(session: nox.Session) -> None:
    """Run the MAML sinusoid example (examples/maml_sinusoid.py) on difopt-core."""
    _install_package(session, CORE, more=("tqdm", "matplotlib"))
    session.run(
        "python",
        str(ROOT / "examples" / "maml_sinusoid.py"),
        *session.posargs,
        env={"MPLBACKEND": "Agg"},
    )


# The plugins the single-process examples use (the distributed one is tested by its package).
EXAMPLE_PACKAGES = ("difopt-implicit", "difopt-unroll", "difopt-visual", "difopt-zeroorder")


@nox.session
def examples(session: nox.Session) -> None:
    """Run every single-process example in examples/ end to end (examples/test_examples.py):
    each must exit 0, i.e. pass its own check that it learned what it shows."""
    targets = [str(_package_dir(p)) for p in (CORE, *EXAMPLE_PACKAGES)]
    _pip(session, "torch", *targets, "tqdm", "matplotlib", "scikit-learn", "pytest")
    session.run(
        "pytest",
        str(ROOT / "examples" / "test_examples.py"),
        str(ROOT / "examples" / "test_fewshot.py"),
        "-p",
        "no:cacheprovider",
        *session.posargs,
    )


@nox.session
def docs(session: nox.Session) -> None:
    """Build the HTML docs into docs/_build/html and check them (part of ``ci``).

    The build treats warnings as errors and executes every notebook (docs/tutorials/*.md and
    docs/migration/*.md, MyST-NB notebooks; a cell that raises fails the build). Then pytest
    runs docs/test_docs.py (every public name of every package has a docstring and a place in
    the API reference; every internal link of the built site resolves) and the ``>>>``
    examples of the Markdown pages.
    Arguments after ``--`` go to sphinx-build.
    """
    import shutil

    # The visualization tutorial and the architecture page's diagrams (sphinx.ext.graphviz)
    # are rendered by Graphviz's `dot` (.ci/run installs it).
    if shutil.which("dot") is None:
        session.error(
            "Graphviz's `dot` is not on PATH; the visualization tutorial and the diagrams need "
            "it (Debian/Ubuntu: apt-get install graphviz; CI installs it in .ci/run)"
        )
    plugins = tuple(str(_package_dir(p)) for p in PACKAGES if p != CORE)
    # MyST-NB parses the Markdown pages (it builds on myst-parser) and executes the tutorials
    # in an ipykernel kernel; matplotlib draws their figures; pytest runs the checks.
    # scikit-learn: the bundled digits of the few-shot and DEQ tutorials.
    tools = (
        "sphinx",
        "myst-parser",
        "myst-nb",
        "ipykernel",
        "furo",
        "matplotlib",
        "pytest",
        "scikit-learn",
    )
    # The migration guide from higher runs higher's code beside difopt's and compares them
    # (pure Python; TorchOpt's and learn2learn's code is shown, not run: see docs/migration/).
    peers = ("higher==0.2.1",)
    _install_package(session, CORE, more=(*plugins, *tools, *peers))
    docs_dir, build = ROOT / "docs", ROOT / "docs" / "_build"
    html = build / "html"
    shutil.rmtree(html, ignore_errors=True)  # no page of an earlier build left to check
    session.run(
        "sphinx-build",
        "-W",
        "--keep-going",
        "-T",  # full tracebacks: a failing tutorial cell is printed with its error
        "-E",  # read every page again: the tutorials run against the difopt just installed
        "-b",
        "html",
        "-d",
        str(build / "doctrees"),
        str(docs_dir),
        str(html),
        *session.posargs,
    )
    session.run(
        "pytest",
        str(docs_dir),
        "--doctest-glob=*.md",
        f"--ignore={build}",
        "--import-mode=importlib",
        "-p",
        "no:cacheprovider",
        env={"DIFOPT_DOCS_HTML": str(html)},
    )
    index = html / "index.html"
    session.log(f"Docs built and checked: open {index.relative_to(ROOT)} ({index.as_uri()})")


@nox.session
def bench(session: nox.Session) -> None:
    """Run benchmarks/run_all.py: difopt beside TorchOpt 0.7.3, higher 0.2.1 and torchdeq 0.1.0
    (benchmarks/deq_digits.py, which also needs scikit-learn's bundled digits), one run."""
    plugins = tuple(str(_package_dir(p)) for p in PACKAGES if p != CORE)
    peers = ("torchopt==0.7.3", "higher==0.2.1", "torchdeq==0.1.0", "scikit-learn")
    peers += ("matplotlib", "tqdm")  # fewshot_digits' plot and progress bar
    _install_package(session, CORE, more=(*plugins, *peers))
    session.run("python", str(ROOT / "benchmarks" / "run_all.py"), *session.posargs)
