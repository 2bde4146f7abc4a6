"""A PyTorch replica of two FREE phases, timed beside free_jax's (BENCHMARKS.md, "PyTorch on this
Intel machine").

Written from the paper's description, not the authors' code: Conv4 as the released code builds it
(3×3 convolution with padding 1, BatchNorm, ReLU, 2×2 max pooling, four times, then a linear head),
the free suite's settings (Conv4-64 teachers, a Conv4-32 student, 100 images at 32×32×3).

    python docs/pytorch_replica.py --side=jax      # free_jax's environment
    python docs/pytorch_replica.py --side=torch    # an environment with torch (CPU build) and numpy

The project does not depend on PyTorch; install it in a scratch environment to run the torch side.
"""
import argparse
import statistics
import time


def median_ms(fn, n=9, warm=2):
    for _ in range(warm):
        fn()
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def torch_side():
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    torch.set_num_threads(2)
    torch.manual_seed(0)

    def conv4(width, classes=5):
        layers, channels = [], 3
        for _ in range(4):
            layers += [nn.Conv2d(channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2)]
            channels = width
        return nn.Sequential(*layers, nn.Flatten(), nn.Linear(width * 2 * 2, classes))

    def crop_flip(x, pad=4):
        padded = F.pad(x, (pad,) * 4)
        i, j = torch.randint(0, 2 * pad + 1, (2,)).tolist()
        out = padded[:, :, i:i + 32, j:j + 32]
        return (torch.flip(out, dims=[3]) if torch.rand(()) < 0.5 else out).contiguous()

    def forward_backward(model, x, y):
        model.zero_grad()
        F.cross_entropy(model(x), y).backward()

    results = {}
    teacher64, x75, y75 = conv4(64), torch.rand(75, 3, 32, 32), torch.randint(0, 5, (75,))
    results["Conv4-64 forward + backward, 75 images, ms"] = median_ms(lambda: forward_backward(teacher64, x75, y75))
    student, x100, y100 = conv4(32), torch.rand(100, 3, 32, 32), torch.randint(0, 5, (100,))
    results["Conv4-32 forward + backward, 100 images, ms"] = median_ms(lambda: forward_backward(student, x100, y100))

    teachers = [conv4(64).eval() for _ in range(4)]
    images = [torch.rand(100, 3, 32, 32) for _ in range(4)]

    def alignment_step():                       # a fresh inner Adam per step, as the released code
        optimizer = torch.optim.Adam(student.parameters(), lr=1e-3)
        for t in torch.randperm(4).tolist():
            views = crop_flip(images[t])
            with torch.no_grad():
                teacher_logits = teachers[t](views)
            loss = F.kl_div(F.log_softmax(student(views), -1), F.softmax(teacher_logits, -1), reduction="batchmean")
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    results["alignment step, 4 teachers, ms"] = median_ms(alignment_step, n=7)

    train, labels = torch.rand(2400, 3, 32, 32), torch.randint(0, 5, (2400,))
    teacher = conv4(64)
    optimizer = torch.optim.SGD(teacher.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)

    def epoch():
        teacher.train()
        order = torch.randperm(2400)
        for start in range(0, 2400, 128):
            batch = order[start:start + 128]
            loss = F.cross_entropy(teacher(crop_flip(train[batch])), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    results["teacher epoch, Conv4-64, 2,400 images, batch 128, ms (each of 5)"] = [
        round(median_ms(epoch, n=1, warm=0)) for _ in range(5)]
    return results


def jax_side():
    import jax
    import optax

    from free_jax import models
    from free_jax.benchmarks import free as free_benchmark, zoo as zoo_benchmark
    from free_jax.meta.alignment import alignment_gradient
    from free_jax.models.conv import kernel_gradient
    from free_jax.models.learner import create_meta_learner

    key = jax.random.key(0)
    blocking = lambda fn: (lambda: jax.block_until_ready(fn()))

    def forward_backward(width, batch):
        module = models.build_backbone("conv4", 5, width)
        variables = models.init_variables(module, key, (32, 32, 3))
        x = jax.random.uniform(key, (batch, 32, 32, 3))
        y = jax.random.randint(key, (batch,), 0, 5)

        def loss(params):
            logits = models.apply(module, {**variables, "params": params}, x, "batch")
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        with kernel_gradient("convolution"):                 # straight-line code, as alignment
            program = jax.jit(jax.grad(loss)).lower(variables["params"]).compile()
        return blocking(lambda: program(variables["params"]))

    results = {"Conv4-64 forward + backward, 75 images, ms": median_ms(forward_backward(64, 75)),
               "Conv4-32 forward + backward, 100 images, ms": median_ms(forward_backward(32, 100))}
    group = free_benchmark._teacher_group(key, free_benchmark._settings(False))
    learner = create_meta_learner(key, "conv4", 5, (32, 32, 3), [0.5] * 3, [0.25] * 3, width=32)
    images = jax.random.uniform(key, (4, 100, 32, 32, 3))
    align = jax.jit(lambda k: alignment_gradient(learner, [group], [images], k)[0])
    results["alignment step, 4 teachers, ms"] = median_ms(blocking(lambda: align(key)), n=7)
    results["teacher epoch (the zoo suite's equal-work arm)"] = zoo_benchmark.equal_work(False)
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--side", choices=("torch", "jax"), required=True, help="which implementation to time")
    for name, value in (torch_side() if parser.parse_args().side == "torch" else jax_side()).items():
        print(f"{name}: {value if not isinstance(value, float) else round(value, 1)}", flush=True)
