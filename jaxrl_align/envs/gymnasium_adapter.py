"""Any Gymnasium environment, stepped on the host, as jaxrl_align trajectories.

:class:`GymnasiumVecEnv` wraps ``gymnasium.make_vec`` (classic control,
MuJoCo through ``gymnasium[mujoco]``, ...) and produces the same
:class:`~jaxrl_align.envs.Trajectory` as the JAX-native
:func:`~jaxrl_align.envs.rollout`: same fields, dtypes and time-major
``[T, N, ...]`` shapes, so one learner serves both.

Auto-reset. Gymnasium's vector envs reset an env on the *next* ``step`` by
default (``AutoresetMode.NEXT_STEP``): the step after an episode ends ignores
its action and returns the reset observation, a transition that does not
exist. We ask for ``AutoresetMode.SAME_STEP``, in which the ending step
returns the reset observation and the true final one in
``info["final_obs"]``; that is what goes into ``next_obs``. Vector envs that
only offer ``NEXT_STEP`` (Gymnasium's NumPy-vectorised classic control,
``vectorization_mode="vector_entry_point"``) are refused with a clear error.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_align import _checks
from jaxrl_align.envs.rollout import PolicyFn
from jaxrl_align.envs.rollout import Trajectory

_SAME_STEP = gymnasium.vector.AutoresetMode.SAME_STEP


class GymnasiumVecEnv:
  """``num_envs`` copies of a Gymnasium env, auto-resetting in the same step.

  Args:
    env_id: any registered Gymnasium id.
    num_envs: number of copies, > 0.
    seed: seed of the first reset: an int (copy ``i`` gets ``seed + i``)
      or one per copy.
    vectorization_mode: ``"sync"`` (default) or ``"async"``.
    clip_action: clip continuous actions to the box before stepping (the
      trajectory keeps the policy's unclipped action).
    **env_kwargs: passed to ``gymnasium.make_vec``.

  Example::

      venv = GymnasiumVecEnv("InvertedPendulum-v5", num_envs=4)
      policy = functools.partial(jitted_policy, params)   # (key, obs) -> ...
      key, trajectory = venv.rollout(policy, key, num_steps=128)
  """

  def __init__(self, env_id: str, num_envs: int, *,
               seed: int | Sequence[int] = 0,
               vectorization_mode: str = "sync", clip_action: bool = True,
               **env_kwargs: Any):
    _checks.check_positive_int("num_envs", num_envs)
    if not isinstance(seed, (int, np.integer)):
      seed = [int(s) for s in seed]
      if len(seed) != num_envs:
        raise ValueError(f"`seed` must be an int or one per env ({num_envs}),"
                         f" got {len(seed)}.")
    if vectorization_mode not in ("sync", "async"):
      raise ValueError(
          f"`vectorization_mode` must be 'sync' or 'async', got "
          f"{vectorization_mode!r}: the vector-entry-point envs only reset on "
          "the next step, which would corrupt final observations.")
    self.env_id = env_id
    self.num_envs = num_envs
    self.clip_action = clip_action
    try:
      self.envs = gymnasium.make_vec(
          env_id, num_envs, vectorization_mode=vectorization_mode,
          vector_kwargs={"autoreset_mode": _SAME_STEP}, **env_kwargs)
    except gymnasium.error.DependencyNotInstalled as e:
      raise ValueError(f"{env_id}: {e}") from None
    if self.envs.metadata.get("autoreset_mode") != _SAME_STEP:
      raise ValueError(f"{env_id}: the vector env does not reset in the same "
                       "step; final observations would be wrong.")
    self.observation_space = self.envs.single_observation_space
    self.action_space = self.envs.single_action_space
    if not isinstance(self.observation_space, gymnasium.spaces.Box):
      raise ValueError(
          f"{env_id}: observations must be a Box (an array), got "
          f"{self.observation_space}; pass wrappers=[gymnasium.wrappers."
          "FlattenObservation] to flatten them.")
    if not isinstance(self.action_space, (gymnasium.spaces.Box,
                                          gymnasium.spaces.Discrete)):
      raise ValueError(f"{env_id}: actions must be Discrete or Box, got "
                       f"{self.action_space}.")
    self._discrete = isinstance(self.action_space, gymnasium.spaces.Discrete)
    self._obs_shape = tuple(self.observation_space.shape)
    self._step = (self._step_sync_envs
                  if isinstance(self.envs, gymnasium.vector.SyncVectorEnv)
                  else self._step_vector_env)
    obs, _ = self.envs.reset(seed=seed)
    self._obs = self._as_obs(obs)
    self._episode_return = np.zeros(num_envs, np.float64)
    self._episode_length = np.zeros(num_envs, np.int32)
    self._action_shape = (num_envs,) + tuple(self.action_space.shape)
    self._flat_action_shape = (num_envs,
                               int(np.prod(self.action_space.shape)))

  @property
  def obs(self) -> np.ndarray:
    """``[N, *obs_shape]`` float32, the current observation."""
    return self._obs

  def _as_obs(self, obs) -> np.ndarray:
    obs = np.asarray(obs, np.float32)
    expected = (self.num_envs,) + tuple(self.observation_space.shape)
    if obs.shape != expected:
      raise ValueError(f"{self.env_id}: observations of shape {obs.shape} do "
                       f"not match the observation space {expected}.")
    return obs

  def _env_action(self, action) -> np.ndarray:
    """Validates the policy's action on the host; returns what to step.

    A ``Box`` action may also come flattened, ``[N, prod(shape)]`` (what a
    Gaussian policy head produces); it is reshaped to the box.
    """
    action = np.asarray(action)
    if action.shape != self._action_shape:
      if not self._discrete and action.shape == self._flat_action_shape:
        action = action.reshape(self._action_shape)
      else:
        raise ValueError(f"{self.env_id}: the policy's `action` must have "
                         f"shape {self._action_shape}, got {action.shape}.")
    if self._discrete:
      n = int(self.action_space.n)
      if not np.issubdtype(action.dtype, np.integer):
        raise ValueError(f"{self.env_id}: `action` must be integers in "
                         f"[0, {n}), got dtype {action.dtype}.")
      if action.min() < 0 or action.max() >= n:
        raise ValueError(f"{self.env_id}: `action` must be in [0, {n}), got "
                         f"values {action.min()}..{action.max()}.")
      return action.astype(np.int64)
    if action.dtype.kind != "f":
      raise ValueError(f"{self.env_id}: `action` must be floating point, got "
                       f"dtype {action.dtype}.")
    if not self.clip_action:
      return action.astype(self.action_space.dtype)
    # np.clip's Python wrapper costs more than these; np.maximum copies.
    action = action.astype(self.action_space.dtype, copy=False)
    return np.minimum(np.maximum(action, self.action_space.low),
                      self.action_space.high)

  def _step_vector_env(self, action, obs, reward, terminated, truncated):
    """One step of the vector env, written into the rows ``obs``,
    ``reward``, ``terminated`` and ``truncated`` (``[N, ...]``); returns
    ``{i: final_obs}`` for each env ``i`` whose episode ended (the vector
    env put the reset observation in ``obs``)."""
    o, r, te, tr, info = self.envs.step(action)
    obs[...] = self._as_obs(o)
    reward[...], terminated[...], truncated[...] = r, te, tr
    return {i: info["final_obs"][i]
            for i in np.flatnonzero(terminated | truncated)}

  def _step_sync_envs(self, action, obs, reward, terminated, truncated):
    """:meth:`_step_vector_env` for a ``SyncVectorEnv``, its envs stepped
    here, as its own ``step`` does in ``SAME_STEP`` mode (each env's
    ``step``, then ``reset()`` where the episode ended), without the
    per-env merging of every ``info`` dict and the copies it makes (about
    a third of a MuJoCo step's time: docs/agents.md). The same envs, in
    the same order, with the same calls: the same observations."""
    final = {}
    for i, env in enumerate(self.envs.envs):
      o, reward[i], terminated[i], truncated[i], _ = env.step(action[i])
      if terminated[i] or truncated[i]:
        final[i] = o
        o, _ = env.reset()
      obs[i] = o
    return final

  def _count(self, reward, done, episode_return, episode_length) -> None:
    """Adds a step to the running episodes; writes the return and length
    of each that ended (``done``; None: none did) into the zeroed rows
    ``episode_return`` and ``episode_length``, and restarts it."""
    self._episode_return += reward
    self._episode_length += 1
    if done is not None:
      episode_return[done] = self._episode_return[done]
      episode_length[done] = self._episode_length[done]
      self._episode_return[done] = 0.0
      self._episode_length[done] = 0

  def collect(self, policy: Callable[[np.ndarray, int], Any],
              num_steps: int) -> dict[str, np.ndarray]:
    """``num_steps`` host steps of every copy, step ``t`` taking the action
    ``policy(obs, t)`` at the observations ``obs [N, ...]`` it starts from.

    The host loop of :meth:`rollout` and of
    :class:`~jaxrl_align.host.stepping.HostPrograms`: each step's fields
    are written into arrays made once for the whole rollout, not stacked
    afterwards.

    Returns:
      NumPy arrays, ``[T, N, ...]`` but ``obs``: ``action`` (as ``policy``
      returned it), ``obs [T + 1, N, ...]`` (the observations each step
      started from, then the last step's result; where an episode ended,
      the reset observation), ``reward`` (float32), ``terminated``,
      ``truncated``, ``next_obs`` (each step's true successor: the final
      observation where an episode ended), ``episode_return`` and
      ``episode_length`` (of the episodes that ended at that step, 0
      elsewhere).
    """
    _checks.check_positive_int("num_steps", num_steps)
    t_n = (num_steps, self.num_envs)
    obs = np.empty((num_steps + 1, self.num_envs) + self._obs_shape,
                   np.float32)
    obs[0] = self._obs
    reward = np.empty(t_n, np.float64)  # the running returns add float64
    terminated, truncated = np.empty(t_n, bool), np.empty(t_n, bool)
    episode_return = np.zeros(t_n, np.float32)
    episode_length = np.zeros(t_n, np.int32)
    actions, finals = None, []
    for t in range(num_steps):
      action = np.asarray(policy(obs[t], t))
      env_action = self._env_action(action)
      if actions is None:
        actions = np.empty((num_steps,) + action.shape, action.dtype)
      actions[t] = action
      final = self._step(env_action, obs[t + 1], reward[t], terminated[t],
                         truncated[t])
      self._count(reward[t], (terminated[t] | truncated[t]) if final else None,
                  episode_return[t], episode_length[t])
      finals.extend((t, i, o) for i, o in final.items())
      self._obs = obs[t + 1]  # where the envs are, should policy raise
    self._obs = obs[-1].copy()  # not a view of what the caller gets
    next_obs = obs[1:].copy() if finals else obs[1:]
    for t, i, o in finals:
      next_obs[t, i] = np.asarray(o, np.float32)
    return {"action": actions, "obs": obs,
            "reward": reward.astype(np.float32), "terminated": terminated,
            "truncated": truncated, "next_obs": next_obs,
            "episode_return": episode_return,
            "episode_length": episode_length}

  def step(self, action) -> dict[str, np.ndarray]:
    """One host step of all copies: one transition's fields, ``[N, ...]``,
    as :meth:`collect`'s (``obs``: the observation it started from)."""
    steps = self.collect(lambda obs, t: action, 1)
    del steps["action"]
    return {k: v[0] for k, v in steps.items()}

  def rollout(self, policy_fn: PolicyFn, key: jax.Array,
              num_steps: int) -> tuple[jax.Array, Trajectory]:
    """Runs ``num_steps`` host steps of a (jitted) policy.

    Args:
      policy_fn: ``(key, obs [N, ...]) -> (action [N, ...], extras)``, the
        same signature as for :func:`jaxrl_align.envs.rollout`. Jit it once
        as a function of ``(params, key, obs)`` and pass
        ``functools.partial(fn, params)`` so new parameters do not retrace.
      key: PRNG key.
      num_steps: ``T`` > 0.

    Returns:
      ``(key, Trajectory)`` with ``[T, N, ...]`` JAX arrays.
    """
    keys, extras = [key], []

    def policy(obs, t):
      del t
      key, policy_key = jax.random.split(keys[-1])
      keys.append(key)
      action, extra = policy_fn(policy_key, jnp.asarray(obs))
      extras.append(extra)
      return action

    steps = self.collect(policy, num_steps)
    steps["obs"] = steps["obs"][:-1]
    return keys[-1], Trajectory(
        extras=jax.tree.map(lambda *xs: jnp.stack(xs), *extras),
        **{k: jnp.asarray(v) for k, v in steps.items()})

  def close(self) -> None:
    self.envs.close()
