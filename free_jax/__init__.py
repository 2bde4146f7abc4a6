"""free_jax: FREE (Faster and Better Data-Free Meta-Learning) in JAX/Flax.

Layers, lowest first. A module imports from free_jax only what lies in a lower layer, never from
a neighbour on its own line nor from above, so every import arrow points down
(tests/test_import_graph.py reads this list and checks the source against it):

    normalization, vectorize, sharding, checkpointing   helpers over jax, numpy and Orbax
    distributed                                          multi-process start-up, barriers, which process writes
    determinism                                          XLA's deterministic GPU kernels (the binaries ask for them)
    host_memory                                          freed host memory back to the OS after big compiles (binaries)
    progress                                             the progress line of long work (count, rate, ETA)
    locks                                                file locks that share work between processes
    models, data                                         networks and the meta-learner; datasets, episodes, Task
    compilation_cache                                    JAX's persistent compilation cache (the binaries turn it on)
    losses, augment                                      what inversion and meta-learning share
    memory, zoo                                          the bank of recovered tasks; the teacher zoo
    inversion                                            FIVE and the baselines' inversions
    meta                                                 MAML, memory replay, gradient alignment
    evaluation                                           episodic meta-testing
    training                                             a FREE run: state, steps, loop, results
    benchmarks                                           timing and quality harnesses
    comparison                                           methods × seeds on one zoo: tables and figures (compare.py)

This root module holds only the version and imports nothing, so any layer may read
``free_jax.__version__``.
"""

__version__ = "0.1.0"
