"""Time the core primitives, compiled, side by side with their peers.

* ``gae`` on ``[T=2048, B=64]`` float32, against rlax's
  ``truncated_generalized_advantage_estimation`` (vmapped over the batch;
  it takes one ``discount_t``, so it cannot tell a time limit from a
  termination) and against a NumPy loop over time (vectorised over the batch).
* ``trpo_step`` on a 64-64 tanh MLP categorical policy with a 2048-sample
  batch: the whole step, and its parts (one Fisher-vector product, the
  10-iteration conjugate gradient).

Compile time is reported apart; run times are the median of repeats after a
warm-up call. Usage: ``python benchmarks/primitives.py [--repeats N]``.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxrl_align as jra


def _median_seconds(fn, repeats):
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def _compile_and_time(fn, args, repeats):
  start = time.perf_counter()
  compiled = jax.jit(fn).lower(*args).compile()
  compile_s = time.perf_counter() - start
  jax.block_until_ready(compiled(*args))
  return compile_s, _median_seconds(lambda: compiled(*args), repeats)


def numpy_gae(reward, value, next_value, terminated, truncated, gamma, lam):
  adv = np.zeros_like(reward)
  last = np.zeros_like(reward[0])
  not_term = 1.0 - terminated
  trace = gamma * lam * not_term * (1.0 - truncated)
  delta = reward + gamma * not_term * next_value - value
  for t in range(reward.shape[0] - 1, -1, -1):
    last = delta[t] + trace[t] * last
    adv[t] = last
  return adv


def bench_gae(repeats):
  rng = np.random.default_rng(0)
  T, B = 2048, 64
  reward, value, next_value = (rng.normal(size=(T, B)).astype(np.float32)
                               for _ in range(3))
  terminated = rng.random((T, B)) < 0.01
  truncated = rng.random((T, B)) < 0.005
  args = tuple(jnp.asarray(x) for x in (reward, value, next_value, terminated,
                                        truncated))
  ours = lambda *a: jra.gae(*a, gamma=0.99, lam=0.95)[0]
  compile_s, ours_s = _compile_and_time(ours, args, repeats)
  rows = [("jaxrl_align.gae", compile_s, ours_s)]

  try:
    import rlax
  except ImportError:
    rlax = None
  if rlax is not None:
    def peer(reward, value, next_value, terminated, truncated):
      del truncated  # rlax has no notion of it
      discount = 0.99 * (1.0 - terminated.astype(jnp.float32))
      values = jnp.concatenate([value, next_value[-1:]], axis=0)
      fn = lambda r, d, v: rlax.truncated_generalized_advantage_estimation(
          r, d, 0.95, v)
      return jax.vmap(fn, in_axes=1, out_axes=1)(reward, discount, values)
    compile_s, peer_s = _compile_and_time(peer, args, repeats)
    rows.append(("rlax (vmapped)", compile_s, peer_s))

  np_args = (reward, value, next_value, terminated.astype(np.float32),
             truncated.astype(np.float32))
  np_s = _median_seconds(lambda: numpy_gae(*np_args, 0.99, 0.95), repeats)
  rows.append(("NumPy loop", 0.0, np_s))
  expected = numpy_gae(*np_args, 0.99, 0.95)
  np.testing.assert_allclose(jax.jit(ours)(*args), expected, rtol=1e-4,
                             atol=1e-4)

  print(f"\ngae on [T={T}, B={B}] float32, median of {repeats}")
  print(f"  {'implementation':22s} {'compile':>9s} {'run':>10s} "
        f"{'run / ours':>11s}")
  for name, c, r in rows:
    print(f"  {name:22s} {c:8.2f}s {r * 1e3:8.2f}ms {r / ours_s:10.2f}x")


def _mlp_init(key, sizes):
  layers = []
  for k, (m, n) in zip(jax.random.split(key, len(sizes) - 1),
                       zip(sizes[:-1], sizes[1:])):
    layers.append({"w": jax.random.normal(k, (m, n)) / np.sqrt(m),
                   "b": jnp.zeros((n,))})
  return layers


def _mlp(layers, x):
  for layer in layers[:-1]:
    x = jnp.tanh(x @ layer["w"] + layer["b"][None])
  return x @ layers[-1]["w"] + layers[-1]["b"][None]


def bench_trpo(repeats):
  n, obs_dim, num_actions = 2048, 8, 4
  key = jax.random.key(0)
  k_p, k_o, k_a, k_adv = jax.random.split(key, 4)
  params = _mlp_init(k_p, [obs_dim, 64, 64, num_actions])
  obs = jax.random.normal(k_o, (n, obs_dim))
  advantage = jax.random.normal(k_adv, (n,))
  num_params = sum(x.size for x in jax.tree.leaves(params))

  def problem(params, obs, advantage):
    old_logits = _mlp(params, obs)
    action = jra.categorical_sample(k_a, old_logits)
    old_lp = jra.categorical_log_prob(old_logits, action)
    loss = lambda p: jra.ppo_clip_loss(
        jra.categorical_log_prob(_mlp(p, obs), action), old_lp, advantage,
        clip_eps=1e9)
    kl = lambda p: jnp.mean(jra.categorical_kl(old_logits, _mlp(p, obs)))
    return loss, kl

  def step(params, obs, advantage):
    loss, kl = problem(params, obs, advantage)
    return jra.trpo_step(loss, kl, params, max_kl=0.01, cg_iters=10,
                         cg_tol=0.0)

  def fvp(params, obs, advantage):
    _, kl = problem(params, obs, advantage)
    return jra.fisher_vector_product(kl, params, params, damping=0.1)

  def cg(params, obs, advantage):
    loss, kl = problem(params, obs, advantage)
    g = jax.grad(loss)(params)
    matvec = lambda v: jra.fisher_vector_product(kl, params, v, damping=0.1)
    return jra.conjugate_gradient(matvec, g, iters=10, tol=0.0)

  args = (params, obs, advantage)
  print(f"\ntrpo_step: 64-64 tanh MLP, {num_params} parameters, categorical "
        f"({num_actions} actions), batch {n}, 10 CG iterations, median of "
        f"{repeats}")
  print(f"  {'part':34s} {'compile':>9s} {'run':>10s}")
  for name, fn in (("trpo_step (whole, with line search)", step),
                   ("one Fisher-vector product", fvp),
                   ("CG, 10 iters (jvp of grad each)", cg)):
    c, r = _compile_and_time(fn, args, repeats)
    print(f"  {name:34s} {c:8.2f}s {r * 1e3:8.2f}ms")
  _, info = jax.jit(step)(*args)
  print(f"  (step accepted={bool(info.accepted)}, kl={float(info.kl):.4f}, "
        f"fraction={float(info.step_fraction):.2f}, "
        f"backtracks={int(info.backtracks)})")


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--repeats", type=int, default=50)
  args = parser.parse_args()
  print(f"jaxrl_align primitives benchmark: JAX {jax.__version__}, "
        f"{jax.default_backend()}, {platform.processor() or platform.machine()}"
        f", {jax.local_device_count()} device(s), {platform.python_version()}")
  bench_gae(args.repeats)
  bench_trpo(args.repeats)


if __name__ == "__main__":
  main()
