"""Test-wide settings: several forced CPU devices (for sharding tests), isolated caches."""
import os

# Must happen before jax initialises its backends: lets sharding tests use a 4-device mesh.
#
# The suite compiles XLA:CPU programs with JAX's ``jax_disable_most_optimizations`` (LLVM -O0, no
# expensive LLVM passes): the HLO a test builds (JAX's trace and XLA's graph passes: the math) is
# the program users run; only the machine code is less optimised. Most tests are compile-bound (a
# glyph smoke run: 72 s at -O0 against 108-123 s at the default level, same results; BENCHMARKS.md
# "Test suite"); the few that run one program hundreds of times are marked ``optimised`` and
# compile at the default level (the flag is read at each compilation; -O0 code runs 3-4× slower).
# The variable is inherited by the binaries tests start as subprocesses. The finite-difference
# checks of the jitted second-order meta-gradient are marked ``optimised`` too (they check the
# machine code users run), and FREE_JAX_TEST_XLA_OPT=default runs the whole suite at the default level.
DEVICE_FLAGS = "--xla_force_host_platform_device_count=4"
FAST_COMPILE = os.environ.get("FREE_JAX_TEST_XLA_OPT") != "default"
os.environ.setdefault("XLA_FLAGS", DEVICE_FLAGS)
os.environ.setdefault("JAX_PLATFORMS", "cpu")
if FAST_COMPILE:
    os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")

import pytest  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _session_compilation_cache(tmp_path_factory):
    """One persistent XLA compilation cache for the session (both workers of a parallel run), also
    used by the real runs that tests start as subprocesses: modules (which drop their in-memory
    jit caches, see below) and runs that compile the same programs load them from disk instead of
    compiling them again. Cached executables are the compiled programs themselves, so results are
    unchanged."""
    import jax
    base = tmp_path_factory.getbasetemp()
    # Shared by the workers of ``pytest -n 2``: programs one compiles, the other loads (an entry
    # read while still being written fails to load, with a warning, and is compiled again).
    directory = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "jax_compilation_cache"
    directory.mkdir(exist_ok=True)
    directory = str(directory)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = directory
    # Every program, however quick to compile (as the binaries do, free_jax/compilation_cache.py):
    # each module drops its jit caches and each subprocess starts empty, so even small programs recur.
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    yield


@pytest.fixture(scope="session", autouse=True)
def _shared_glyph_cache(tmp_path_factory):
    """One glyph cache for the whole session (tests that test the cache set their own), shared by
    the workers of a parallel run (``pytest -n 2``): entries are renamed into place when complete,
    so a worker reads another's finished entry or renders its own, never half of one."""
    if "FREE_JAX_CACHE_DIR" not in os.environ:
        base = tmp_path_factory.getbasetemp()
        root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
        directory = root / "free_jax_cache"
        directory.mkdir(exist_ok=True)
        os.environ["FREE_JAX_CACHE_DIR"] = str(directory)
    yield


def load_config_file(name: str, arg: str = ""):
    """``get_config(arg)`` of experiments/configs/<name>.py, imported by path."""
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / "experiments" / "configs" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"config_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def glyph_smoke_config(zoo_path, **overrides):
    """``glyphs:smoke`` on the zoo at ``zoo_path``, with ``overrides`` by dotted name
    (``iterations=2``, ``**{"inversion.k": 3}``)."""
    config = load_config_file("glyphs", "smoke")
    config.zoo_path = str(zoo_path)
    for name, value in overrides.items():
        target = config
        *parents, leaf = name.split(".")
        for parent in parents:
            target = target[parent]
        target[leaf] = value
    return config


@pytest.fixture(autouse=True)
def _optimisation_level(request):
    """Tests marked ``optimised`` (compute-bound: one program run hundreds of times; or the
    exactness checks) compile at XLA's default optimisation level; the rest at -O0 (see the top of
    this file)."""
    if not (FAST_COMPILE and request.node.get_closest_marker("optimised")):
        yield
        return
    import jax
    jax.config.update("jax_disable_most_optimizations", False)
    try:
        yield
    finally:
        jax.config.update("jax_disable_most_optimizations", True)


@pytest.fixture(scope="session")
def glyph_smoke_run(tmp_path_factory):
    """One whole ``glyphs:smoke`` FREE run shared by every test that inspects a finished run
    (it costs minutes of compilation on CPU). Returns (workdir, results, eval splits loaded in order);
    the zoo is in <workdir>/zoo."""
    from free_jax.training import evaldata, loop
    workdir = tmp_path_factory.mktemp("glyph_smoke") / "run"
    calls = []
    original = evaldata.load_eval_domains

    def spy(config, split, *args, **kwargs):
        calls.append(split)
        return original(config, split, *args, **kwargs)

    evaldata.load_eval_domains = spy
    try:
        results = loop.run(load_config_file("glyphs", "smoke"), workdir, log=lambda *_: None)
    finally:
        evaldata.load_eval_domains = original
    return workdir, results, calls


# The xdist groups that take longest, longest first (seconds of test time summed per group in a
# whole-suite run on 2 cores, 2026-12-06: strategy parity 355, the glyph smoke run's group 324,
# mesh 297, benchmark smokes 247, MAML 224, configs 181, slots 118, FIVE claim 111, zoo build 109,
# compare 85, evaluation 83, inversion 66). Only the order in which the workers are handed the
# groups depends on it (longest first evens out the two workers' loads), never a result.
LONGEST_GROUPS = ("test_strategy_parity", "glyph_smoke_run", "test_mesh", "test_benchmarks_small", "test_maml",
                  "test_configs", "test_slots", "test_inversion_five_claim", "test_zoo_build", "test_compare",
                  "test_evaluation", "test_inversion")


def pytest_configure(config):
    """pytest-xdist hands groups to the workers in collection order (``pytest_collection_modifyitems``
    below puts the longest first) instead of its default, most tests first: a group of one long
    test handed out last (the two-process test, the FIVE claim) kept one worker busy for minutes
    after the other had finished."""
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Scheduling for ``pytest -n 2 --dist loadgroup`` (pytest-xdist; the README's test command):
    each module runs whole on one worker, so its module-scoped fixtures (zoos, trained teachers)
    are built once, and every module with a test that reads the shared ``glyph_smoke_run`` goes
    to the same worker, so that run is trained once. Groups are collected longest first
    (``LONGEST_GROUPS``), the rest in file order. Without xdist the markers do nothing."""
    module_of = lambda item: item.module.__name__.rsplit(".", 1)[-1]
    smoke_modules = {module_of(item) for item in items if "glyph_smoke_run" in item.fixturenames}
    group_of = lambda item: "glyph_smoke_run" if module_of(item) in smoke_modules else module_of(item)
    rank = lambda group: LONGEST_GROUPS.index(group) if group in LONGEST_GROUPS else len(LONGEST_GROUPS)
    items.sort(key=lambda item: rank(group_of(item)))                 # stable: file order within a rank
    for item in items:
        item.add_marker(pytest.mark.xdist_group(group_of(item)))


@pytest.fixture(scope="module", autouse=True)
def _release_compiled_programs():
    """Drops jit caches after each test module. One pytest process compiles hundreds of XLA:CPU
    programs; keeping them all alive aborted a full-suite run inside XLA compilation (a resource
    limit of the CPU JIT), so each module starts with only what it compiles itself."""
    yield
    import jax
    jax.clear_caches()
