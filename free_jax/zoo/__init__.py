"""The model zoo: vectorised teacher pre-training and the teacher store.

  group, specs = pretrain_teachers(split, "conv4", num_teachers=20, way=5, epochs=10, key=key)
  zoo = Zoo.from_pretrained([(group, specs)]); zoo.save(path)
  zoo = Zoo.load(path, way=5); groups = zoo.sample(key, 4)   # stacked TeacherGroups
  teachers = zoo.slots(zoo.sample_ids(key, 4))                # the same draw as indices (one program)
  zoo = build_or_load_zoo(path, config)                       # pre-train / resume / load
"""
from free_jax.zoo.build import build_or_load_zoo, data_options_config, default_config, summarize
from free_jax.zoo.group import TeacherGroup
from free_jax.zoo.pretrain import OptimizerConfig, default_optimizer, pretrain_teachers
from free_jax.zoo.slots import TeacherSlots, as_groups, map_slots
from free_jax.zoo.spec import TeacherSpec, group_name
from free_jax.zoo.store import Zoo

__all__ = ["OptimizerConfig", "TeacherGroup", "TeacherSlots", "TeacherSpec", "Zoo", "as_groups", "build_or_load_zoo",
           "data_options_config", "default_config", "default_optimizer", "group_name", "map_slots", "pretrain_teachers",
           "summarize"]
