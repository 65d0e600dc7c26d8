"""Runs in a subprocess of ``test_parallel.py`` with 8 forced CPU devices
(the device count is fixed when JAX starts) and writes what it measured as
JSON to ``argv[1]``; the test asserts. Part ``argv[2]``: ``learners``
(PPO and TRPO on 1, 2 and 8 devices; gradients, statistics and
Fisher-vector products, each next to a wrong reduction; seeds over
devices), ``runner`` (the runner and its checkpoints over devices) or
``rlhf`` (the sft, reward-model and RL steps over devices)."""

import json
import os
import sys

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_force_host_platform_device_count=8")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")  # as in conftest.py
jax.config.update("jax_numpy_dtype_promotion", "strict")

from jaxrl_align import envs  # noqa: E402
from jaxrl_align import fisher_vector_product  # noqa: E402
from jaxrl_align import losses  # noqa: E402
from jaxrl_align import normalization  # noqa: E402
from jaxrl_align import parallel  # noqa: E402
from jaxrl_align.agents import on_policy  # noqa: E402
from jaxrl_align.agents import ppo  # noqa: E402
from jaxrl_align.agents import trpo  # noqa: E402

DEVICES = (1, 2, 8)
REFERENCE = {}  # one device's parameters, per algorithm
SAVE_PARAMS = [None]  # where learner_runs saves PPO's one-device parameters


def flat(tree) -> np.ndarray:
  return np.concatenate([np.ravel(np.asarray(x, np.float64))
                         for x in jax.tree.leaves(tree)])


def max_diff(a, b) -> float:
  return float(np.max(np.abs(flat(a) - flat(b))))


def spec(x) -> list:
  return [None if s is None else str(s) for s in x.sharding.spec]


def bitwise(a, b) -> bool:
  """Every leaf equal, bit for bit (PRNG keys by their data)."""
  def data(x):
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      x = jax.random.key_data(x)
    return np.asarray(x)
  return all(np.array_equal(data(x), data(y), equal_nan=True)
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def pieces(x) -> int:
  """Distinct pieces of ``x`` over its devices (1: replicated)."""
  return len({str(s.index) for s in x.addressable_shards})


# ------------------------------------------------------------- learners


PPO = ppo.PPOConfig(env_id="CartPole-v1", total_timesteps=8 * 16 * 3,
                    num_envs=8, num_steps=16, num_minibatches=2,
                    update_epochs=2, normalize_obs=True, scale_reward=True,
                    target_kl=0.02)
TRPO = trpo.TRPOConfig(env_id="Pendulum-v1", total_timesteps=8 * 16 * 3,
                       num_envs=8, num_steps=16, num_minibatches=2,
                       update_epochs=2, normalize_obs=True)


def learner_runs(algo, config):
  """Parameters, metrics, running statistics and layouts after three
  updates on each device count."""
  out, ref = {}, None
  for d in DEVICES:
    with jax.set_mesh(parallel.mesh(data=d)):
      state, metrics = jax.jit(algo.train)(config, jax.random.key(0))
      stats = on_policy.obs_stats(config, state.rollout.env_state)
      rec = {"params": state.params, "metrics": metrics, "stats": stats}
      if ref is None:
        ref = rec
        REFERENCE[algo.__name__.split(".")[-1]] = state.params
        if SAVE_PARAMS[0] and algo is ppo:  # what multihost_checks.py is
          # compared with: one process, one device, the whole batch
          leaves = {str(i): np.asarray(x) for i, x in
                    enumerate(jax.tree.leaves(state.params))}
          np.savez(SAVE_PARAMS[0], episode_return=np.asarray(
              metrics["episode_return"]), **leaves)
      out[d] = {
          "params": max_diff(rec["params"], ref["params"]),
          "stats": max_diff(rec["stats"], ref["stats"]),
          "metrics": {k: max_diff(v, ref["metrics"][k])
                      for k, v in metrics.items()},
          "obs_spec": spec(state.rollout.obs),
          "obs_pieces": pieces(state.rollout.obs),
          "episodes": float(np.sum(metrics["episodes_finished"]))}
  return out


# --------------------------------------- reductions, right and wrong

B, OBS = 64, 4


def _batch():
  k = jax.random.split(jax.random.key(1), 4)
  return {"obs": jax.random.normal(k[0], (B, OBS)),
          "action": jax.random.randint(k[1], (B,), 0, 2),
          "log_prob": -jnp.log(2.0) + 0.1 * jax.random.normal(k[2], (B,)),
          "advantage": jax.random.normal(k[3], (B,))}


def _policy():
  return on_policy.make_policy(PPO, *envs.spaces("CartPole-v1"))


def reductions():
  """The PPO gradient, running statistics and a Fisher-vector product on
  one batch, with the batch on 1 and 8 devices (the compiler's reductions)
  and with hand-written ``shard_map`` reductions: the right one (``pmean``)
  and the classic wrong one (``psum`` of per-shard means)."""
  policy = _policy()
  params = policy.init(jax.random.key(2), 0.0)
  batch = _batch()

  def loss(p, b):
    out, value = policy.apply(p, b["obs"])
    log_prob = policy.head.log_prob(out, b["action"])
    adv = normalization.whiten(b["advantage"])
    return (losses.ppo_clip_loss(log_prob, b["log_prob"], adv, clip_eps=0.2)
            + losses.value_loss(value, b["advantage"]))

  def stats(b):
    return normalization.running_mean_std_update(
        normalization.running_mean_std_init((OBS,)), b["obs"])

  def fvp(p, b):
    old = jax.lax.stop_gradient(policy.apply(p, b["obs"])[0])

    def kl(q):
      return jnp.mean(policy.head.kl(old, policy.apply(q, b["obs"])[0]))

    return fisher_vector_product(kl, p, jax.tree.map(jnp.ones_like, p),
                                 damping=0.1)

  fns = {"grad": lambda b: jax.grad(loss)(params, b), "stats": stats,
         "fvp": lambda b: fvp(params, b)}
  results = {}
  for name, fn in fns.items():
    with jax.set_mesh(parallel.mesh(data=1)):
      one = jax.jit(fn)(batch)
    with jax.set_mesh(parallel.mesh(data=8)) as m:
      eight = jax.jit(lambda b: fn(parallel.shard_batch(b)))(batch)

      def by_hand(reduce):
        def local(b):
          return jax.tree.map(lambda x: reduce(x, parallel.DATA), fn(b))
        return jax.jit(jax.shard_map(local, mesh=m, in_specs=P(parallel.DATA),
                                     out_specs=P(), check_vma=False))(batch)

      right = by_hand(jax.lax.pmean)
      wrong = by_hand(jax.lax.psum)
    scale = float(np.max(np.abs(flat(one))))
    results[name] = {
        "eight": max_diff(eight, one) / scale,
        # statistics are not means of per-shard statistics (the variance
        # needs the between-shard term): only the gradient and the FVP are
        # right with `pmean`
        "pmean": max_diff(right, one) / scale,
        "psum": max_diff(wrong, one) / scale,
        "psum_ratio": float(np.linalg.norm(flat(wrong))
                            / np.linalg.norm(flat(one)))}
  return results


# ------------------------------------------------------------ seeds


def seeds():
  """8 seeds of PPO over 8 `seeds` devices and over 2 x 4, and a sweep of 4
  learning rates over 4: seed (or config) 0 is ``learner_runs``' one-device
  run; 6 seeds over 4 devices."""
  keys = jax.random.split(jax.random.key(3), 8).at[0].set(jax.random.key(0))
  ref = REFERENCE["ppo"]
  out, runs = {}, {}
  for s, d in ((8, 1), (2, 4)):
    with jax.set_mesh(parallel.mesh(seeds=s, data=d)):
      mapped = jax.jit(parallel.vmap_seeds(ppo.train, in_axes=(None, 0)))
      state, _ = mapped(PPO, keys)
      leaf = jax.tree.leaves(state.params)[0]
      runs[s] = state.params
      out[f"{s}x{d}"] = {
          "params": max_diff(jax.tree.map(lambda x: x[0], state.params), ref),
          "spec": spec(leaf), "obs_spec": spec(state.rollout.obs),
          "pieces": pieces(leaf)}
  out["8x1_vs_2x4"] = max_diff(runs[8], runs[2])
  sweep = jax.vmap(lambda lr: PPO.replace(learning_rate=lr))(
      PPO.learning_rate * jnp.array([1.0, 0.1, 0.3, 3.0]))
  with jax.set_mesh(parallel.mesh(seeds=4)):
    state, _ = jax.jit(parallel.vmap_seeds(ppo.train, in_axes=(0, None)))(
        sweep, keys[0])
    leaf = jax.tree.leaves(state.params)[0]
    out["sweep"] = {
        "params": max_diff(jax.tree.map(lambda x: x[0], state.params), ref),
        "distinct": len({float(np.asarray(leaf[i]).sum()) for i in range(4)}),
        "spec": spec(leaf), "pieces": pieces(leaf)}
    try:
      jax.jit(parallel.vmap_seeds(ppo.train, in_axes=(None, 0)))(
          PPO, keys[:6])
      out["6_over_4"] = "no error"
    except ValueError as e:
      out["6_over_4"] = str(e)
  return out


# ------------------------------------------------------------ runner


def runner_checks(tmp):
  from jaxrl_align.host import runner

  config = PPO.replace(total_timesteps=8 * 16 * 4)
  out = {}

  def run(name, **kw):
    stop = kw.pop("stop_after", None)
    kw.setdefault("seeds", 2)
    settings = runner.RunnerSettings(chunk=1, checkpoint_every=1, **kw)
    path = os.path.join(tmp, name)
    r = runner.run("ppo", config, path, settings, progress=False,
                   stop_after=stop)
    if stop is not None:
      r = runner.run("ppo", config, path, resume=True, progress=False)
    return r

  # four seeds on one device: the reference of multihost_checks.py's run
  # of the command over two processes (their run directories compared)
  single = run("single4", devices=1, seeds=4)
  np.savez(os.path.join(tmp, "single4_params.npz"),
           **{str(i): np.asarray(x) for i, x in
              enumerate(jax.tree.leaves(single.states.params))})
  # seeds over 2 devices: each seed's whole batch on one device, the
  # reference of the data-parallel run
  whole = None
  for name, kw in {"seeds2": dict(devices=2, shard="seeds"),
                   "data8": dict(devices=8, shard="data")}.items():
    r = run(name, **kw)
    whole = whole or r
    resumed = run(name + "_resumed", stop_after=2, **kw)
    leaf = jax.tree.leaves(r.states.params)[0]
    out[name] = {
        "vs_one_device": max_diff(r.states.params, whole.states.params),
        "resumed_bitwise": bitwise(r.states, resumed.states),
        "eval_diff": max_diff(r.evaluation, whole.evaluation),
        "params_spec": spec(leaf), "obs_spec": spec(r.states.rollout.obs)}
  errors = {}
  for name, kw in {"too_many": dict(devices=16),
                   "seeds": dict(devices=4, seeds=3),
                   "batch": dict(devices=8, shard="data"),
                   "shard": dict(devices=2, shard="model")}.items():
    cfg = config.replace(num_envs=12, total_timesteps=12 * 16 * 4) if (
        name == "batch") else config
    path = os.path.join(tmp, "err_" + name)
    try:
      runner.run("ppo", cfg, path, runner.RunnerSettings(**kw),
                 progress=False)
      errors[name] = "no error"
    except runner.RunError as e:
      errors[name] = str(e)
    errors[name + "_dir"] = os.path.exists(path)
  out["errors"] = errors
  return out


# ------------------------------------------------------------- rlhf


def rlhf_checks():
  from jaxrl_align.rlhf import model as model_lib
  from jaxrl_align.rlhf import ppo as rl_ppo
  from jaxrl_align.rlhf import reward_model
  from jaxrl_align.rlhf import rl
  from jaxrl_align.rlhf import sft
  from jaxrl_align.rlhf import trpo as rl_trpo

  def steps(learner, config, data, n):
    def run(key):
      state = learner.init(config, key, data)
      return jax.lax.scan(lambda s, _: learner.update(config, s, data),
                          state, None, length=n)
    return jax.jit(run)(jax.random.key(0))

  model = model_lib.TransformerConfig(vocab_size=16, max_len=8, num_layers=1,
                                      num_heads=2, width=32)
  tokens = jax.random.randint(jax.random.key(1), (64, 8), 0, 16)
  params = model_lib.Transformer(model).init(jax.random.key(2),
                                             jnp.zeros((1, 2), jnp.int32))
  mask = jnp.ones((32, 8), bool)
  pairs = reward_model.Pairs(tokens[:32], mask, tokens[32:], mask)
  V, N = 5, 3
  toy = model_lib.TransformerConfig(vocab_size=V, max_len=1 + N,
                                    num_layers=1, num_heads=2, width=32)
  ref = model_lib.Transformer(toy).init(jax.random.key(3),
                                        jnp.zeros((1, 2), jnp.int32))
  table = jax.random.uniform(jax.random.key(4), (V ** N,)) * 2

  def table_score(table, tokens, mask):
    del mask
    response = tokens[:, -N:]
    return table[sum(response[:, i] * V ** (N - 1 - i) for i in range(N))]

  prompts = jnp.full((16, 1), 1, jnp.int32)
  pmask = jnp.ones((16, 1), bool)
  rl_data = rl.RLData(prompts, pmask, prompts[:8], pmask[:8], ref, table,
                      ref, table_score)

  def rl_config(cls):
    return cls(model=toy, stop_token=4, pad_token=0, response_length=N,
               kl_control="fixed", kl_coef=0.1, batch_size=16, iterations=2)

  cases = {
      "sft": (sft.LEARNER, sft.SFTConfig(model=model, batch_size=16, steps=3,
                                          warmup_steps=1),
              sft.SFTData(tokens, tokens[:16]), 3, "train_loss"),
      "rm": (reward_model.LEARNER, reward_model.RMConfig(
          model=model, train_pairs=32, batch_size=16, warmup_steps=1),
          reward_model.RMData(params, pairs, pairs, pairs, jnp.zeros(32)), 3,
          "train_loss"),
      "rl_ppo": (rl_ppo.LEARNER, rl_config(rl_ppo.RLHFPPOConfig), rl_data, 2,
                 "objective/kl"),
      "rl_trpo": (rl_trpo.LEARNER, rl_config(rl_trpo.RLHFTRPOConfig), rl_data, 2,
                  "objective/kl")}
  apply_fn = model_lib.Transformer(model).apply
  grad = jax.jit(lambda t: jax.grad(lambda p: sft.next_token_loss(
      apply_fn, p, parallel.shard_batch(t), jnp.ones(t.shape, bool)))(params))
  with jax.set_mesh(parallel.mesh(data=1)):
    one = grad(tokens)
  with jax.set_mesh(parallel.mesh(data=8)):
    eight = grad(tokens)
  out = {"sft_grad": max_diff(eight, one) / float(np.max(np.abs(flat(one))))}
  for name, (learner, config, data, n, metric) in cases.items():
    base = None
    for d in (1, 8):
      with jax.set_mesh(parallel.mesh(data=d)):
        state, metrics = steps(learner, config, data, n)
      if base is None:
        base = (state.params, metrics)
        continue
      out[f"{name}_{d}"] = {
          "params": max_diff(state.params, base[0]),
          "params_scale": float(np.max(np.abs(flat(base[0])))),
          "metric": max_diff(metrics[metric], base[1][metric]),
          "metric_value": float(np.max(np.abs(flat(base[1][metric]))))}
      if name in ("sft", "rm"):  # Adam's first steps: see test_parallel
        out[f"{name}_{d}"]["lr"] = float(config.learning_rate)
      if name == "rl_trpo":
        for k in ("policy/accepted", "policy/step_fraction"):
          out[f"{name}_{d}"][k] = max_diff(metrics[k], base[1][k])
  return out


def main():
  path, part = sys.argv[1], sys.argv[2]
  assert len(jax.devices()) == 8, jax.devices()
  if part == "learners":
    SAVE_PARAMS[0] = path + ".ppo_params.npz"
    result = {"ppo": learner_runs(ppo, PPO), "trpo": learner_runs(trpo, TRPO),
              "reductions": reductions(), "seeds": seeds()}
  elif part == "runner":
    result = runner_checks(sys.argv[3])
  else:
    result = rlhf_checks()
  with open(path, "w") as f:
    json.dump(result, f, indent=1)


if __name__ == "__main__":
  main()
