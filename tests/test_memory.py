"""Memory bank: ring-buffer add/overwrite, sampling semantics, errors, storage precision."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from free_jax import memory

SHAPE = (2, 2, 1)


def _images(values):
    """One constant 2×2×1 image per value (values in [0, 1])."""
    return jnp.asarray(values, jnp.float32)[:, None, None, None] * jnp.ones((1, *SHAPE))


def _stored(bank, cls):
    """Host list of the first-pixel values of class ``cls``'s valid slots, in slot order."""
    size = int(bank.sizes()[cls])
    return [float(memory._decode(bank.images[cls, i])[0, 0, 0]) for i in range(size)]


def test_add_fills_slots_in_order_and_counts():
    bank = memory.create_bank(3, capacity=4, image_shape=SHAPE, dtype=jnp.float32)
    bank = memory.add(bank, _images([0.1, 0.2, 0.3]), jnp.array([0, 2, 0]))
    np.testing.assert_array_equal(bank.counts, [2, 0, 1])
    assert _stored(bank, 0) == pytest.approx([0.1, 0.3])
    assert _stored(bank, 2) == pytest.approx([0.2])


def test_ring_buffer_overwrites_oldest_across_and_within_calls():
    bank = memory.create_bank(2, capacity=3, image_shape=SHAPE, dtype=jnp.float32)
    add = jax.jit(memory.add)
    bank = add(bank, _images([0.1, 0.2]), jnp.array([1, 1]))
    bank = add(bank, _images([0.3, 0.4]), jnp.array([1, 1]))      # 0.4 overwrites 0.1 (slot 0)
    assert _stored(bank, 1) == pytest.approx([0.4, 0.2, 0.3])
    # Five images of one class in one call into capacity 3: only the last three survive, the
    # ring position advances by five (as if written one by one).
    bank = add(bank, _images([0.5, 0.6, 0.7, 0.8, 0.9]), jnp.array([1] * 5))
    assert int(bank.counts[1]) == 9
    # sequential writes would leave slot (9-1)%3=2 ← 0.9, slot 1 ← 0.8, slot 0 ← 0.7
    assert _stored(bank, 1) == pytest.approx([0.7, 0.8, 0.9])
    assert int(bank.counts[0]) == 0


def test_out_of_range_labels_are_dropped():
    bank = memory.create_bank(2, capacity=2, image_shape=SHAPE, dtype=jnp.float32)
    bank = memory.add(bank, _images([0.1, 0.2, 0.3]), jnp.array([-1, 2, 1]))
    np.testing.assert_array_equal(bank.counts, [0, 1])
    assert _stored(bank, 1) == pytest.approx([0.3])


def test_uint8_quantisation_error_bound_and_dtypes():
    values = jnp.linspace(0.0, 1.0, 37)
    for dtype, bound in ((jnp.uint8, 0.5 / 255 + 1e-7), (jnp.bfloat16, 2.0 ** -9), (jnp.float32, 0.0)):
        bank = memory.create_bank(1, capacity=37, image_shape=SHAPE, dtype=dtype)
        bank = memory.add(bank, _images(values), jnp.zeros(37, jnp.int32))
        assert bank.images.dtype == jnp.dtype(dtype)
        np.testing.assert_allclose(_stored(bank, 0), values, atol=bound, rtol=0)
    with pytest.raises(ValueError, match="uint8, bfloat16 or float32"):
        memory.create_bank(1, 2, SHAPE, dtype=jnp.int16)


def _filled_bank(per_class_counts, capacity=6):
    """Class c holds ``per_class_counts[c]`` images valued c + i/100 (identifies class and slot)."""
    bank = memory.create_bank(len(per_class_counts), capacity, SHAPE, dtype=jnp.float32)
    values, labels = [], []
    for cls, n in enumerate(per_class_counts):
        values += [cls / 10 + i / 100 for i in range(n)]
        labels += [cls] * n
    return memory.add(bank, _images(values), jnp.array(labels))


def test_sample_tasks_semantics():
    bank = _filled_bank([5, 2, 5, 4, 6, 3])           # need shot+query = 1+3 = 4: classes 0,2,3,4
    np.testing.assert_array_equal(memory.eligible_classes(bank, 4), [0, 2, 3, 4])
    sample = jax.jit(memory.sample_tasks, static_argnums=(2, 3, 4, 5))
    sx, sy, qx, qy = sample(bank, jax.random.key(0), 50, 3, 1, 3)
    assert sx.shape == (50, 3, *SHAPE) and qx.shape == (50, 9, *SHAPE)
    np.testing.assert_array_equal(sy[0], [0, 1, 2])
    np.testing.assert_array_equal(qy[0], [0, 0, 0, 1, 1, 1, 2, 2, 2])
    seen = set()
    for task in range(50):
        values = np.concatenate([sx[task, :, 0, 0, 0], qx[task, :, 0, 0, 0]])
        labels = np.concatenate([sy[task], qy[task]])
        classes = {}
        for value, label in zip(values, labels):
            classes.setdefault(int(label), []).append(value)
        cls_ids = [int(round(np.floor(v[0] * 10 + 1e-6))) for v in classes.values()]
        assert len(set(cls_ids)) == 3                                   # distinct classes
        assert set(cls_ids) <= {0, 2, 3, 4}                             # only eligible ones
        for vals in classes.values():
            assert len({round(v, 4) for v in vals}) == 4                # distinct images
            assert len({int(round(np.floor(v * 10 + 1e-6))) for v in vals}) == 1  # one class per label
        seen |= set(cls_ids)
    assert seen == {0, 2, 3, 4}                                         # tasks mix classes


def test_too_few_eligible_classes_errors_clearly():
    bank = _filled_bank([5, 2, 5, 1])
    with pytest.raises(ValueError, match=r"only 2 classes hold >= 4 images .* 3-way task"):
        memory.check_can_sample(bank, way=3, shot=1, query=3)
    memory.check_can_sample(bank, way=2, shot=1, query=3)
    with pytest.raises(ValueError, match="at most 6 per class"):
        memory.check_can_sample(bank, way=1, shot=5, query=15)


def test_sample_tasks_rejects_a_capacity_below_shot_plus_query():
    """With capacity < shot + query a task would silently include empty (black) slots."""
    bank = memory.create_bank(3, capacity=4, image_shape=SHAPE)
    bank = memory.add(bank, _images([0.1] * 4 + [0.2] * 4), jnp.array([0] * 4 + [1] * 4))
    sample = jax.jit(memory.sample_tasks, static_argnums=(2, 3, 4, 5))
    for fn in (memory.sample_tasks, sample):
        with pytest.raises(ValueError, match=r"shot \+ query = 5 images per class .* at most 4 per class"):
            fn(bank, jax.random.key(0), 2, 2, 1, 4)
    sample(bank, jax.random.key(0), 2, 2, 1, 3)                         # 4 fit
