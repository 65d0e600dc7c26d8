"""The demonstration (the README's main job) and the command line."""

import jax
import numpy as np
import pytest

from jaxrl_align import cli
from jaxrl_align import demo


def test_time_limit_demo_shows_the_truncation_bug():
  correct, wrong = demo.time_limit_advantages()
  assert float(correct) < 1e-4
  assert float(wrong) > 10.0


@pytest.mark.parametrize("algo", ["trpo", "ppo"])
def test_bandit_learns_over_seeds(algo):
  keys = jax.random.split(jax.random.key(0), 4)
  m = jax.jit(jax.vmap(lambda k: demo.train_bandit(k, algo=algo,
                                                   num_updates=40)))(keys)
  first = np.asarray(m.mean_reward[:, :3]).mean(1)
  last = np.asarray(m.mean_reward[:, -5:]).mean(1)
  optimal = np.asarray(m.optimal_reward).mean(1)
  # Every seed closes at least 85% of its gap to the optimal policy.
  assert np.all(last - first > 0.85 * (optimal - first)), (first, last, optimal)
  if algo == "trpo":
    assert float(np.max(m.kl)) <= 0.02
    assert float(np.mean(m.accepted)) > 0.9


def test_bandit_is_reproducible_bit_for_bit():
  run = jax.jit(lambda k: demo.train_bandit(k, algo="trpo", num_updates=5))
  a, b = run(jax.random.key(3)), run(jax.random.key(3))
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)


def test_cli_demo_runs(capsys):
  assert cli.main(["demo", "--seeds", "2", "--updates", "5"]) == 0
  out = capsys.readouterr().out
  assert "trpo" in out and "ppo" in out


def test_cli_rejects_bad_values(capsys):
  assert cli.main(["demo", "--seeds", "0"]) == 2
  assert "--seeds" in capsys.readouterr().err
  with pytest.raises(SystemExit):
    cli.main(["nonsense"])
  with pytest.raises(ValueError, match="algo"):
    demo.train_bandit(jax.random.key(0), algo="a2c")
