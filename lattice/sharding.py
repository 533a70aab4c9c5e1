"""Device mesh from `config.mesh`, the logical-axis rules table, sharding helpers.

Model code names axes logically (weights: vocab embed mlp heads kv_heads head_dim
exp layers; activations: act_*). Only this file maps them onto the mesh axes
(data fsdp expert tensor), MaxText-style, so a new parallelism layout is a new row
here, never a change to a layer.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from lattice import config as config_lib

MESH_AXES = ('data', 'fsdp', 'expert', 'tensor')

# logical axis -> mesh axis (or axes). The batch is split over every axis that
# holds a copy of the model's data-parallel work: data, fsdp and expert (expert
# parallelism is data parallelism outside the MoE layer).
RULES: tuple[tuple[str, Any], ...] = (
    ('act_batch', ('data', 'fsdp', 'expert')),
    ('act_len', None),
    ('act_embed', None),
    ('act_mlp', 'tensor'),
    ('act_heads', 'tensor'),
    ('act_kv_heads', 'tensor'),
    ('act_vocab', 'tensor'),
    ('act_exp', 'expert'),
    ('vocab', 'tensor'),
    ('embed', 'fsdp'),
    ('mlp', 'tensor'),
    ('heads', 'tensor'),
    ('kv_heads', 'tensor'),
    ('head_dim', None),
    ('exp', 'expert'),
    ('layers', None),
)


def mesh_shape(mesh_cfg: config_lib.MeshConfig, n_devices: int) -> dict[str, int]:
  """Axis sizes, with data=-1 filled in; ConfigError if they do not fit the devices."""
  fixed = mesh_cfg.fsdp * mesh_cfg.expert * mesh_cfg.tensor
  if mesh_cfg.data == -1:
    if n_devices % fixed:
      raise config_lib.ConfigError(
          f'mesh: fsdp*expert*tensor = {fixed} does not divide the {n_devices} '
          f'available devices')
    data = n_devices // fixed
  else:
    data = mesh_cfg.data
  shape = dict(data=data, fsdp=mesh_cfg.fsdp, expert=mesh_cfg.expert,
               tensor=mesh_cfg.tensor)
  if math.prod(shape.values()) != n_devices:
    raise config_lib.ConfigError(
        f'mesh: data*fsdp*expert*tensor = {math.prod(shape.values())} '
        f'({shape}) must equal the {n_devices} available devices')
  return shape


def make_mesh(mesh_cfg: config_lib.MeshConfig, devices=None) -> Mesh:
  devices = jax.devices() if devices is None else devices
  shape = mesh_shape(mesh_cfg, len(devices))
  dims = tuple(shape[a] for a in MESH_AXES)
  if list(devices) == list(jax.devices()):
    # jax.make_mesh orders devices for the physical topology (ICI rings on TPU).
    return jax.make_mesh(dims, MESH_AXES, axis_types=(AxisType.Auto,) * len(dims))
  return Mesh(np.asarray(devices).reshape(dims), MESH_AXES,
              axis_types=(AxisType.Auto,) * len(dims))


def validate_for_mesh(cfg: config_lib.Config, mesh: Mesh) -> None:
  """Divisibility checks that depend on the mesh, as clear ConfigErrors."""
  sizes = dict(mesh.shape)
  batch_ways = sizes['data'] * sizes['fsdp'] * sizes['expert']
  if cfg.data.batch_size % batch_ways:
    raise config_lib.ConfigError(
        f'data.batch_size: {cfg.data.batch_size} is not divisible by the '
        f'data*fsdp*expert = {batch_ways} ways the batch is split over the mesh')
  m, t = cfg.model, sizes['tensor']
  for path, value in (('model.attention.n_heads', m.n_heads),
                      ('model.attention.n_kv_heads', m.n_kv_heads),
                      ('model.ffn.d_ff', m.d_ff), ('model.vocab_size', m.vocab_size)):
    if value % t:
      raise config_lib.ConfigError(
          f'{path}: {value} is not divisible by mesh.tensor={t}')
  if m.d_model % sizes['fsdp']:
    raise config_lib.ConfigError(
        f'model.d_model: {m.d_model} is not divisible by mesh.fsdp={sizes["fsdp"]}')


def axis_rules():
  """Context manager installing the logical->mesh rules for flax constraints."""
  return nn.logical_axis_rules(RULES)


@contextlib.contextmanager
def use_mesh(mesh: Mesh):
  with jax.set_mesh(mesh), axis_rules():
    yield


def logical_to_sharding(logical_tree: Any, mesh: Mesh) -> Any:
  """NamedShardings for a tree of flax `Partitioned`-boxed (abstract) values."""
  specs = nn.get_partition_spec(logical_tree)
  return nn.logical_to_mesh_sharding(specs, mesh, RULES)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over the data-parallel mesh axes."""
  spec = nn.logical_to_mesh_axes(('act_batch',), RULES)
  return NamedSharding(mesh, P(*spec))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def global_batch(local_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Assembles each process's local rows into one global array sharded over the batch."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, v)
          for k, v in local_batch.items()}


def to_host(tree: Any) -> Any:
  """Whole numpy copies of (possibly sharded, possibly multi-process) arrays."""
  from jax.experimental import multihost_utils

  def get(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))

  return jax.tree.map(get, tree)
