"""Parity with Stable-Baselines3 and sb3-contrib: GAE, PPO's loss terms, TRPO.

Each test calls the peers' own code (the installed ``stable_baselines3`` and
``sb3_contrib`` packages, the ``test`` extra) on the same data as ours and
converts the conventions where they differ (``docs/agents.md``, "Conventions
against Stable-Baselines3"). A deliberately wrong variant of ours is checked
to fail each comparison, so no test passes vacuously.
"""

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrl_align as jr
from jaxrl_align import losses
from jaxrl_align import normalization

th = pytest.importorskip("torch")
sb3 = pytest.importorskip("stable_baselines3")
buffers = pytest.importorskip("stable_baselines3.common.buffers")
sb3_logger = pytest.importorskip("stable_baselines3.common.logger")


def _rollout(seed, t, n):
  """Random ``[T, N]`` rollout with terminations and time-limit truncations.

  ``next_value[t] = value[t+1]`` inside an episode; after a termination or a
  truncation it is the value of the true final observation (zero does not
  matter after a termination: nothing bootstraps from it).
  """
  rng = np.random.default_rng(seed)
  reward = rng.normal(size=(t, n))
  value = rng.normal(size=(t, n))
  final_value = rng.normal(size=(t, n))  # V(final observation) at an episode end
  last_value = rng.normal(size=n)        # V(s_T) after the rollout
  end = rng.random((t, n))
  terminated = end < 0.1
  truncated = (end >= 0.1) & (end < 0.2)
  terminated[-1, 0], truncated[-1, 0] = False, True  # cut at the rollout's end
  terminated[-1, 1], truncated[-1, 1] = True, False
  done = terminated | truncated
  next_value = np.concatenate([value[1:], last_value[None]], axis=0)
  next_value = np.where(done, final_value, next_value)
  return reward, value, next_value, terminated, truncated, last_value


def _sb3_gae(reward, value, next_value, terminated, truncated, last_value,
             gamma, lam, dtype):
  """SB3's ``RolloutBuffer.compute_returns_and_advantage``
  (``stable_baselines3/common/buffers.py``) on the same rollout.

  The buffer is filled as ``OnPolicyAlgorithm.collect_rollouts``
  (``stable_baselines3/common/on_policy_algorithm.py``) fills it: one
  ``done = terminated or truncated`` flag, stored as the next step's
  ``episode_start``, and on a truncation ``γ·V(final observation)`` added
  to the step's reward.
  """
  t, n = reward.shape
  buf = buffers.RolloutBuffer(
      t, gym.spaces.Box(-1.0, 1.0, (1,)), gym.spaces.Discrete(2),
      gae_lambda=lam, gamma=gamma, n_envs=n)
  done = terminated | truncated
  buf.rewards = (reward + gamma * truncated * next_value).astype(dtype)
  buf.values = value.astype(dtype)
  buf.episode_starts = np.concatenate(
      [np.zeros((1, n)), done[:-1]], axis=0).astype(dtype)
  buf.advantages = np.zeros((t, n), dtype)
  last = np.where(truncated[-1], 0.0, last_value).astype(dtype)
  buf.compute_returns_and_advantage(th.as_tensor(last), done[-1])
  return buf.advantages, buf.returns


@pytest.mark.parametrize("variant", ["ours", "broken"])
@pytest.mark.parametrize("dtype,tol", [(np.float32, 1e-6),
                                       (np.float64, 1e-12)])
def test_gae_equals_sb3_rollout_buffer(dtype, tol, variant):
  t, n, gamma, lam = 64, 6, 0.99, 0.95
  reward, value, next_value, terminated, truncated, last_value = _rollout(
      0, t, n)
  assert terminated.any() and truncated.any() and terminated[-1].any()
  want_adv, want_ret = _sb3_gae(reward, value, next_value, terminated,
                                truncated, last_value, gamma, lam, dtype)
  # The broken variant treats a time limit as a termination (no bootstrap).
  term = terminated | truncated if variant == "broken" else terminated
  with jax.enable_x64(dtype == np.float64):
    args = [jnp.asarray(x.astype(dtype)) for x in (reward, value, next_value)]
    gae = jax.jit(lambda r, v, nv, d, c: jr.gae(r, v, nv, d, c, gamma=gamma,
                                                lam=lam))
    adv, ret = gae(*args, term, truncated)
    # vmap over the environments (axis 1) gives the same numbers.
    adv_v, _ = jax.vmap(gae, in_axes=1, out_axes=1)(*args, term, truncated)
    assert adv.dtype == dtype
  close = (np.allclose(adv, want_adv, rtol=tol, atol=tol)
           and np.allclose(ret, want_ret, rtol=tol, atol=tol)
           and np.allclose(adv_v, want_adv, rtol=tol, atol=tol))
  assert close == (variant == "ours"), np.abs(adv - want_adv).max()


def _fill(buf, model, rng, noise):
  """Fills an SB3 rollout buffer with random observations and actions; the
  stored log-probabilities and values are the policy's own plus ``noise``
  (as if collected by an older policy), so ratios and clipping are active.
  """
  t, n = buf.buffer_size, buf.n_envs
  obs = rng.normal(size=(t, n) + buf.obs_shape).astype(np.float32)
  if isinstance(model.action_space, gym.spaces.Discrete):
    action = rng.integers(0, model.action_space.n, size=(t, n, 1))
    scored = action.reshape(-1)
  else:
    action = rng.normal(size=(t, n, buf.action_dim)).astype(np.float32)
    scored = action.reshape(t * n, -1)
  with th.no_grad():
    value, log_prob, _ = model.policy.evaluate_actions(
        th.as_tensor(obs.reshape(t * n, -1)), th.as_tensor(scored))
  buf.observations[:] = obs
  buf.actions[:] = action
  buf.log_probs[:] = (log_prob.numpy().reshape(t, n)
                      + noise * rng.normal(size=(t, n)))
  buf.values[:] = value.numpy().reshape(t, n) + noise * rng.normal(size=(t, n))
  buf.advantages[:] = rng.normal(size=(t, n)) + 0.3
  buf.returns[:] = rng.normal(size=(t, n))
  buf.full, buf.generator_ready = True, False


def _flat(x):
  return jnp.asarray(np.asarray(x, np.float32).reshape(-1))


@pytest.mark.parametrize("variant", ["ours", "max_form", "ddof0"])
def test_ppo_loss_terms_equal_sb3_ppo_train(variant):
  """SB3's ``PPO.train`` (``stable_baselines3/ppo/ppo.py``) for one epoch of
  one minibatch logs its loss terms at the incoming weights; ours at the
  same log-probabilities, values and entropies give the same numbers.

  Conventions converted (docs/agents.md): SB3's value loss is the MSE, ours
  ½·MSE; SB3 clips the value prediction (our ``form="prediction"``); SB3
  whitens the advantages with ``ddof=1``. The ``max_form`` and ``ddof0``
  variants keep our defaults and must not match.
  """
  t, clip, clip_vf = 64, 0.2, 0.3
  model = sb3.PPO("MlpPolicy", "CartPole-v1", n_steps=t, batch_size=t,
                  n_epochs=1, clip_range=clip, clip_range_vf=clip_vf,
                  policy_kwargs=dict(net_arch=[16]), seed=0, device="cpu")
  model.set_logger(sb3_logger.Logger(None, []))
  buf = model.rollout_buffer
  _fill(buf, model, np.random.default_rng(1), noise=0.3)
  with th.no_grad():
    value, log_prob, entropy = model.policy.evaluate_actions(
        th.as_tensor(buf.observations.reshape(t, -1)),
        th.as_tensor(buf.actions.reshape(-1)))
  model.train()
  logged = model.logger.name_to_value

  def terms(log_prob, old_log_prob, advantage, value, old_value, target,
            entropy):
    advantage = normalization.whiten(advantage,
                                     ddof=0 if variant == "ddof0" else 1)
    form = "max" if variant == "max_form" else "prediction"
    return {
        "policy_gradient_loss": losses.ppo_clip_loss(
            log_prob, old_log_prob, advantage, clip_eps=clip),
        "value_loss": 2 * losses.clipped_value_loss(
            value, old_value, target, clip_eps=clip_vf, form=form),
        "entropy_loss": losses.entropy_loss(entropy),
        "approx_kl": losses.approx_kl(log_prob, old_log_prob),
        "clip_fraction": losses.clip_fraction(log_prob, old_log_prob,
                                              clip_eps=clip)}

  ours = jax.jit(terms)(
      _flat(log_prob), _flat(buf.log_probs), _flat(buf.advantages),
      _flat(value), _flat(buf.values), _flat(buf.returns), _flat(entropy))
  assert 0 < logged["train/clip_fraction"] < 1  # clipping is exercised
  forms = [losses.clipped_value_loss(
      _flat(value), _flat(buf.values), _flat(buf.returns), clip_eps=clip_vf,
      form=form) for form in ("max", "prediction")]
  assert abs(forms[0] - forms[1]) > 1e-3  # the clipping forms differ here
  close = {k: np.isclose(float(v), logged["train/" + k], rtol=1e-5, atol=1e-6)
           for k, v in ours.items()}
  if variant == "ours":
    assert all(close.values()), (
        {k: (float(v), logged["train/" + k]) for k, v in ours.items()})
  else:
    assert not all(close.values())


_ACTOR = ("mlp_extractor.policy_net.0.weight", "mlp_extractor.policy_net.0.bias",
          "action_net.weight", "action_net.bias")


def _actor_params(policy):
  """SB3's actor weights as a list of arrays, in sb3-contrib's flattening
  order (``named_parameters`` without the critic's)."""
  named = dict(policy.named_parameters())
  return [jnp.asarray(named[k].detach().numpy()) for k in _ACTOR]


def _logits(params, obs):
  """SB3's ``MlpPolicy`` actor for a discrete action: a tanh layer, then
  the ``action_net`` logits (torch's ``Linear`` is ``x Wᵀ + b``)."""
  w1, b1, w2, b2 = params
  return jnp.tanh(obs @ w1.T + b1[None]) @ w2.T + b2[None]


def _flat_params(params):
  return np.concatenate([np.asarray(p).reshape(-1) for p in params])


def _zero_start_cg(monkeypatch, trpo_module):
  """Makes sb3-contrib's ``conjugate_gradient_solver`` start from zero (its
  ``th.randn_like`` start replaced by zeros, as ours starts) and returns
  the dict it records its search direction in."""
  captured = {}
  solver = trpo_module.conjugate_gradient_solver

  def zero_start_solver(matvec, b, **kwargs):
    with monkeypatch.context() as patch:
      patch.setattr(th, "randn_like", th.zeros_like)
      x = solver(matvec, b, **kwargs)
    captured["direction"] = x.detach().numpy().copy()
    return x

  monkeypatch.setattr(trpo_module, "conjugate_gradient_solver",
                      zero_start_solver)
  return captured


@pytest.mark.parametrize("variant,max_kl", [
    ("ours", 0.01), ("ours", 0.3), ("kl_old_new", 0.01)])
def test_trpo_step_equals_sb3_contrib_trpo_train(monkeypatch, variant,
                                                 max_kl):
  """One :func:`jaxrl_align.trpo_step` against one policy step of
  sb3-contrib's ``TRPO.train`` (``sb3_contrib/trpo/trpo.py``) from the same
  weights and batch: 10 CG iterations, damping 0.1, δ = 0.01, shrink 0.8,
  10 line-search trials, advantages whitened with ``ddof=1``.

  Conventions made to coincide:

  * sb3-contrib's ``conjugate_gradient_solver``
    (``sb3_contrib/common/utils.py``) starts from ``1e-4·randn``; ours from
    zero. Its ``th.randn_like`` is replaced by zeros for this call.
  * sb3-contrib's line search bounds ``KL(new || old)``, ours checks the
    ``kl_fn`` it is given (the learners pass ``KL(old || new)``); here
    ``kl_fn`` is ``KL(new || old)``. The Fisher matrix, the Hessian of
    either direction at the old weights, is the same.
  * sb3-contrib accepts ``KL < δ``, ours ``KL ≤ δ``: they differ only at
    ``KL == δ`` exactly, which a float step does not hit here (the KL
    reached is checked to be away from δ).
  * Both require a strict surrogate improvement.

  On this batch both accept the full step at δ = 0.01 and at δ = 0.3 (whose
  step is about five times longer); the backtracking branch is tested in
  ``tests/test_trust_region.py``.

  The ``kl_old_new`` variant passes our learners' ``KL(old || new)`` and
  must not match the KL reached.
  """
  sb3_contrib = pytest.importorskip("sb3_contrib")
  trpo_module = pytest.importorskip("sb3_contrib.trpo.trpo")
  t = 64
  model = sb3_contrib.TRPO(
      "MlpPolicy", "CartPole-v1", n_steps=t, batch_size=t, cg_max_steps=10,
      cg_damping=0.1, line_search_shrinking_factor=0.8,
      line_search_max_iter=10, n_critic_updates=1, target_kl=max_kl,
      policy_kwargs=dict(net_arch=[8]), seed=0, device="cpu")
  model.set_logger(sb3_logger.Logger(None, []))
  buf = model.rollout_buffer
  _fill(buf, model, np.random.default_rng(2), noise=0.0)
  params = _actor_params(model.policy)

  captured = _zero_start_cg(monkeypatch, trpo_module)
  model.train()
  logged = model.logger.name_to_value
  sb3_step = _flat_params(_actor_params(model.policy)) - _flat_params(params)

  obs = jnp.asarray(buf.observations.reshape(t, -1))
  action = jnp.asarray(buf.actions.reshape(-1).astype(np.int32))
  old_log_prob = _flat(buf.log_probs)
  advantage = normalization.whiten(_flat(buf.advantages), ddof=1)
  old_logits = _logits(params, obs)

  def log_prob(p):
    logp = jax.nn.log_softmax(_logits(p, obs))
    return jnp.take_along_axis(logp, action[:, None], axis=1)[:, 0]

  def loss_fn(p):
    return -jnp.mean(jnp.exp(log_prob(p) - old_log_prob) * advantage)

  def kl_fn(p):
    new = _logits(p, obs)
    if variant == "kl_old_new":
      return jnp.mean(jr.categorical_kl(old_logits, new))
    return jnp.mean(jr.categorical_kl(new, old_logits))

  def ours(p):
    new_p, info = jr.trpo_step(loss_fn, kl_fn, p, max_kl=max_kl, cg_iters=10,
                               cg_damping=0.1, backtrack_coeff=0.8,
                               backtrack_iters=10)
    # The search direction trpo_step solves for: (F + 0.1 I) s = -∇loss.
    direction = jr.conjugate_gradient(
        lambda v: jr.fisher_vector_product(kl_fn, p, v, damping=0.1),
        jax.tree.map(jnp.negative, jax.grad(loss_fn)(p)), iters=10)
    return new_p, info, direction

  new_params, info, direction = jax.jit(ours)(params)
  step = _flat_params(new_params) - _flat_params(params)

  assert logged["train/is_line_search_success"] == 1.0 and bool(info.accepted)
  assert float(info.step_fraction) == 1.0
  assert abs(logged["train/kl_divergence_loss"] - max_kl) > 1e-4
  np.testing.assert_allclose(_flat_params(direction), captured["direction"],
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(step, sb3_step, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(_flat_params(new_params),
                             _flat_params(_actor_params(model.policy)),
                             rtol=1e-5, atol=1e-5)
  kl_close = np.isclose(float(info.kl), logged["train/kl_divergence_loss"],
                        rtol=1e-5, atol=1e-7)
  assert kl_close == (variant == "ours"), (
      float(info.kl), logged["train/kl_divergence_loss"])


@pytest.mark.parametrize("variant", ["ours", "learned_features"])
def test_trpo_step_with_gsde_equals_sb3_contrib_trpo_train(monkeypatch,
                                                           variant):
  """The same comparison for the Gaussian policy with gSDE (``use_sde``),
  through our learners' own pieces: the :class:`~jaxrl_align.heads.
  GSDEGaussian` head (``Σ_j(s) = Σ_i f_i(s)² σ_ij² + 1e-6`` with the
  features' gradient stopped, SB3's ``learn_features=False``), its
  ``log_std`` matrix stepped with the actor, and the Fisher-vector products
  in the Gauss–Newton form the TRPO learner uses (``fisher_output``).

  sb3-contrib's ``TRPO.train`` steps every parameter the KL depends on
  (``named_parameters`` without the critic's: ``log_std`` first). The
  ``learned_features`` variant lets the gradient flow into the features
  through ``Σ(s)`` and must not match.
  """
  sb3_contrib = pytest.importorskip("sb3_contrib")
  trpo_module = pytest.importorskip("sb3_contrib.trpo.trpo")
  from jaxrl_align import heads

  t, hidden, max_kl = 64, 8, 0.01
  model = sb3_contrib.TRPO(
      "MlpPolicy", "Pendulum-v1", n_steps=t, batch_size=t, cg_max_steps=10,
      cg_damping=0.1, line_search_shrinking_factor=0.8,
      line_search_max_iter=10, n_critic_updates=1, target_kl=max_kl,
      use_sde=True, policy_kwargs=dict(net_arch=[hidden], log_std_init=-0.5),
      seed=0, device="cpu")
  model.set_logger(sb3_logger.Logger(None, []))
  names = [k for k, _ in model.policy.named_parameters() if "value" not in k]
  assert names == ["log_std", *_ACTOR], names  # sb3-contrib's step order
  with th.no_grad():  # a log-std matrix with distinct entries
    model.policy.log_std.add_(
        th.as_tensor(np.random.default_rng(4).normal(
            0.0, 0.3, size=(hidden, 1)).astype(np.float32)))
  buf = model.rollout_buffer
  _fill(buf, model, np.random.default_rng(3), noise=0.0)

  def actor(policy):
    named = dict(policy.named_parameters())
    return [jnp.asarray(named[k].detach().numpy()) for k in names]

  params = actor(model.policy)
  captured = _zero_start_cg(monkeypatch, trpo_module)
  model.train()
  logged = model.logger.name_to_value

  head = heads.GSDEGaussian(action_dim=1, latent_dim=hidden)
  obs = jnp.asarray(buf.observations.reshape(t, -1))
  action = jnp.asarray(buf.actions.reshape(t, -1))
  old_log_prob = _flat(buf.log_probs)
  advantage = normalization.whiten(_flat(buf.advantages), ddof=1)

  def out(p):
    log_std, w1, b1, w2, b2 = p
    features = jnp.tanh(obs @ w1.T + b1[None])
    mean = features @ w2.T + b2[None]
    if variant == "learned_features":  # the features' gradient kept
      return mean, log_std, features
    return head.output(mean, log_std, features)

  old_out = jax.lax.stop_gradient(out(params))

  def loss_fn(p):
    ratio = jnp.exp(head.log_prob(out(p), action) - old_log_prob)
    return -jnp.mean(ratio * advantage)

  def kl_fn(p):  # sb3-contrib's KL(new || old)
    return jnp.mean(head.kl(out(p), old_out))

  fisher_output = (out, lambda o: jnp.mean(head.kl(old_out, o)))

  def ours(p):
    new_p, info = jr.trpo_step(loss_fn, kl_fn, p, max_kl=max_kl, cg_iters=10,
                               cg_damping=0.1, backtrack_coeff=0.8,
                               backtrack_iters=10, fisher_output=fisher_output)
    direction = jr.conjugate_gradient(
        lambda v: jr.fisher_vector_product(kl_fn, p, v, damping=0.1),
        jax.tree.map(jnp.negative, jax.grad(loss_fn)(p)), iters=10)
    return new_p, info, direction

  new_params, info, direction = jax.jit(ours)(params)
  assert logged["train/is_line_search_success"] == 1.0 and bool(info.accepted)
  matches = [
      np.allclose(_flat_params(direction), captured["direction"],
                  rtol=1e-5, atol=1e-5),
      np.allclose(_flat_params(new_params), _flat_params(actor(model.policy)),
                  rtol=1e-5, atol=1e-5),
      np.isclose(float(info.kl), logged["train/kl_divergence_loss"],
                 rtol=1e-5, atol=1e-7)]
  if variant == "ours":
    assert float(info.step_fraction) == 1.0
    assert all(matches), (matches, float(info.kl),
                          logged["train/kl_divergence_loss"])
  else:
    assert not all(matches)
