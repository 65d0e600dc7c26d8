"""The learner protocol and the one runner: a learner written here, in the
test, runs through ``host.runner`` unchanged (data, periodic assessment,
evaluation, resume); configs, heads and the shared SGD pieces it uses."""

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from typing import Any, NamedTuple

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct
from gymnax.environments import spaces

import jaxrl_align as jra
from jaxrl_align import configs
from jaxrl_align import heads
from jaxrl_align import sgd
from jaxrl_align.host import files
from jaxrl_align.host import runner
from jaxrl_align.host import views
from jaxrl_align.learner import Learner


# -------------------------------------- a learner the runner has never seen


@struct.dataclass
class RegConfig:
  """Linear regression by SGD.

  Attributes:
    steps: *static* SGD steps.
    batch: *static* samples per step.
    every: *static* steps between validations.
    learning_rate: step size.
  """
  steps: int = configs.static(12)
  batch: int = configs.static(4)
  every: int = configs.static(3)
  learning_rate: Any = 0.1


class RegData(NamedTuple):
  x: jax.Array
  y: jax.Array
  x_valid: jax.Array
  y_valid: jax.Array


class RegState(NamedTuple):
  w: jax.Array
  key: jax.Array
  step: jax.Array
  best: jax.Array


def _init(config, key, data):
  return RegState(jnp.zeros(data.x.shape[1]), key, jnp.zeros((), jnp.int32),
                  jnp.full((), jnp.inf))


def _update(config, state, data):
  key, sub = jax.random.split(state.key)
  idx = jax.random.randint(sub, (config.batch,), 0, data.x.shape[0])
  loss, g = jax.value_and_grad(
      lambda w: jnp.mean((data.x[idx] @ w - data.y[idx]) ** 2))(state.w)
  return (RegState(state.w - config.learning_rate * g, key, state.step + 1,
                   state.best),
          {"loss": loss, "samples": ((state.step + 1) * config.batch
                                     ).astype(jnp.float32)})


def _assess(config, state, data):
  valid = jnp.mean((data.x_valid @ state.w - data.y_valid) ** 2)
  return state._replace(best=jnp.minimum(state.best, valid)), {
      "valid": valid}


REG = Learner(
    name="regression", config_type=RegConfig, init=_init, update=_update,
    num_updates=lambda c: c.steps, units="samples",
    units_per_update=lambda c: c.batch, finite_metrics=("loss",),
    assess=_assess, assess_every=lambda c: c.every,
    evaluate=lambda c, s, k, d, n: {
        "mse": jnp.mean((d.x_valid @ s.w - d.y_valid) ** 2), "best": s.best})

# How the host shows it: its own record, not the learner's.
REG_VIEW = views.View(
    progress_metric="valid",
    summarize=lambda c, e, last: {"best": e["best"].tolist(),
                                  "eval": e["mse"].tolist()},
    report=str)


def _data():
  rng = np.random.default_rng(0)
  w = np.array([1.0, -2.0, 0.5], np.float32)
  x = rng.normal(size=(64, 3)).astype(np.float32)
  xv = rng.normal(size=(16, 3)).astype(np.float32)
  return RegData(jnp.asarray(x), jnp.asarray(x @ w), jnp.asarray(xv),
                 jnp.asarray(xv @ w))


def test_a_new_learner_runs_through_the_runner_unchanged(tmp_path):
  out = str(tmp_path / "reg")
  settings = runner.RunnerSettings(seeds=2, chunk=3, keep=2)
  result = runner.run(REG, RegConfig(), out, settings, data=_data(),
                      progress=False, view=REG_VIEW)
  rows = files.read_metrics(out)
  assert [(r["update"], r["seed"]) for r in rows] == [
      (u, s) for u in range(1, 13) for s in range(2)]
  # Assessed after updates 3, 6, 9, 12; null (no value) elsewhere.
  assert [r["update"] for r in rows if r["valid"] is not None] == [
      3, 3, 6, 6, 9, 9, 12, 12]
  assert rows[-1]["samples"] == 48
  summary = json.load(open(os.path.join(out, "summary.json")))
  assert summary["algo"] == "regression" and summary["samples"] == 48
  # The state's best validation loss is the lowest one logged, per seed.
  for seed in range(2):
    logged = [r["valid"] for r in rows if r["seed"] == seed
              and r["valid"] is not None]
    np.testing.assert_allclose(summary["best"][seed], min(logged), rtol=1e-6)
  assert summary["eval"][0] < rows[0]["loss"]  # it learned
  run = json.load(open(os.path.join(out, "config.json")))
  assert run["units"] == "samples" and run["progress_metric"] == "valid"
  # Stopped after 6 updates and resumed: the same run, bit for bit.
  part = str(tmp_path / "part")
  runner.run(REG, RegConfig(), part, settings, data=_data(), progress=False,
             stop_after=6)  # no view: the generic one
  resumed = runner.run(REG, RegConfig(), part, settings, data=_data(),
                       resume=True, progress=False)
  assert files.read_metrics(part) == rows
  for a, b in zip(jax.tree.leaves(jax.random.key_data(resumed.states.key)),
                  jax.tree.leaves(jax.random.key_data(result.states.key))):
    np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(resumed.states.w, result.states.w)
  # Without a view the host shows its first finite metric and no summary
  # fields of its own; the learner record holds no presentation.
  assert files.read_run(part)["progress_metric"] == "loss"
  assert "best" not in resumed.summary and resumed.summary["samples"] == 48
  assert not {"progress_metric", "summarize", "report", "notes", "defaults",
              "programs"} & {f.name for f in dataclasses.fields(Learner)}
  # The chunk must divide the assessment interval.
  with pytest.raises(runner.RunError, match="assessment interval"):
    runner.run(REG, RegConfig(), str(tmp_path / "x"),
               runner.RunnerSettings(chunk=2), data=_data(), progress=False)
  assert runner.default_chunk(600, every=50) == 25  # not 30: 50 % 30 != 0


# --------------------------------------------------------- configs, heads


def test_config_round_trip_choices_and_derived_fields():
  from jaxrl_align.agents import ppo
  from jaxrl_align.rlhf import model, reward_model

  config = reward_model.RMConfig(model=model.TransformerConfig(vocab_size=9),
                                 train_pairs=10)
  back = configs.from_dict(reward_model.RMConfig,
                           json.loads(json.dumps(configs.to_dict(config))))
  assert back == config and isinstance(back.model, model.TransformerConfig)
  derived = [f.name for f in dataclasses.fields(reward_model.RMConfig)
             if configs.is_derived(f)]
  assert derived == ["model", "train_pairs"]
  with pytest.raises(ValueError, match="`objective` must be one of 'clip'"):
    ppo.PPOConfig(objective="trust")
  assert "discount in [0, 1]" in configs.field_docs(ppo.PPOConfig)["gamma"]
  assert configs.diff(ppo.PPOConfig(), ppo.PPOConfig(gamma=0.5)) == {
      "gamma": (0.98, 0.5)}


@pytest.mark.parametrize("space, head", [
    (spaces.Discrete(3), heads.Categorical(3)),
    (gymnasium.spaces.Discrete(5), heads.Categorical(5)),
    (spaces.Box(-1, 1, (2,)), heads.DiagGaussian(2)),
    (gymnasium.spaces.Box(-1, 1, (2, 3)), heads.DiagGaussian(6)),
])
def test_head_for_each_space(space, head):
  assert heads.for_space(space) == head


def test_heads_are_the_distributions():
  key = jax.random.key(0)
  logits, other = jax.random.normal(key, (2, 5, 3))
  cat = heads.Categorical(3)
  a = cat.sample(key, logits)
  np.testing.assert_array_equal(a, jra.categorical_sample(key, logits))
  np.testing.assert_allclose(cat.log_prob(logits, a),
                             jra.categorical_log_prob(logits, a))
  np.testing.assert_allclose(cat.kl(logits, other),
                             jra.categorical_kl(logits, other))
  mean, log_std = jnp.ones((5, 2)), jnp.array([0.1, -0.3])
  gauss = heads.DiagGaussian(2)
  out = (mean, log_std)
  np.testing.assert_allclose(gauss.entropy(out),
                             jra.gaussian_entropy(mean, log_std))
  np.testing.assert_array_equal(gauss.mode(out), mean)
  assert gauss.every(out, 2)[0].shape == (3, 2)
  with pytest.raises(ValueError, match="Discrete or Box"):
    heads.for_space(gymnasium.spaces.MultiDiscrete([2, 2]))


# ------------------------------------------------------------------- sgd


def test_minibatch_epochs_stop_after_the_epoch_that_trips():
  # The carry counts steps; `stop` trips once the count reaches 5 (during
  # epoch 3 of 6, 2 steps per epoch): epochs 4-6 are discarded.
  batch = {"x": jnp.arange(8.0)}

  def step(count, minibatch):
    return count + 1, {"count": count + 1, "seen": minibatch["x"].sum()}

  count, aux, active = sgd.minibatch_epochs(
      step, jnp.zeros((), jnp.int32), batch, jax.random.key(0), epochs=6,
      num_minibatches=2, stop=lambda a: a["count"] >= 5)
  assert int(count) == 6  # 3 epochs of 2 steps
  np.testing.assert_array_equal(active, [[1, 1]] * 3 + [[0, 0]] * 3)
  # Every epoch saw every sample once.
  np.testing.assert_allclose(aux["seen"].sum(1), 28.0)
  free, _, all_active = sgd.minibatch_epochs(
      step, jnp.zeros((), jnp.int32), batch, jax.random.key(0), epochs=6,
      num_minibatches=2)
  assert int(free) == 12 and bool(all_active.all())


# ------------------------------------------------------------ checkpoints


def test_checkpoints_restore_into_the_templates_shardings(tmp_path):
  # Four host devices in a subprocess (the device count is fixed when JAX
  # starts): a state sharded over a mesh comes back sharded the same way.
  code = textwrap.dedent(f"""
      import jax, jax.numpy as jnp, numpy as np
      from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
      from jaxrl_align.host import checkpoints
      mesh = Mesh(np.array(jax.devices()), ("data",))
      spread = NamedSharding(mesh, P("data"))
      state = {{"w": jax.device_put(jnp.arange(8.0), spread),
               "key": jax.device_put(jax.random.split(jax.random.key(0), 4),
                                     spread),
               "b": jnp.ones(3)}}
      store = checkpoints.Checkpoints({str(tmp_path / "ck")!r}, 1)
      store.save(1, state)
      template = jax.tree.map(jnp.zeros_like, state)
      template["key"] = jax.device_put(jax.random.split(jax.random.key(1), 4),
                                       spread)
      _, back = store.restore(template)
      store.close()
      assert back["w"].sharding == spread, back["w"].sharding
      assert back["key"].sharding == spread
      assert len(back["w"].addressable_shards) == 4
      np.testing.assert_array_equal(back["w"], np.arange(8.0))
      np.testing.assert_array_equal(jax.random.key_data(back["key"]),
                                    jax.random.key_data(state["key"]))
      print("ok")
      """)
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
             JAX_PLATFORMS="cpu")
  done = subprocess.run([sys.executable, "-c", code], env=env,
                        capture_output=True, text=True, timeout=300)
  assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


# ------------------------------------------------- the RLHF stage runner


def _tree_hashes(root) -> dict[str, str]:
  """Every file under ``root`` by its SHA-256."""
  import hashlib

  return {os.path.join(d, n): hashlib.sha256(
      open(os.path.join(d, n), "rb").read()).hexdigest()
          for d, _, names in os.walk(root) for n in names}


def _reg_stage(tmp_path, refuse=None):
  """The regression learner as a pipeline stage: it reads a run directory
  (``--src``), writes a file of its own once the run exists, and a product
  and summary fields at the end."""
  from jaxrl_align.host.rlhf import stages

  @dataclasses.dataclass(frozen=True)
  class Settings:
    seed: int = 0
    devices: int = 1

  calls = {"created": 0}

  def prepare(out, config, settings, inputs, documents, resume):
    assert os.path.isdir(inputs["src"])

    def on_create(out):
      calls["created"] += 1
      with open(os.path.join(out, "tokenizer.json"), "w") as f:
        f.write("{}")
    return stages.Prepared(config or RegConfig(), _data(),
                           record={"rows": 64}, on_create=on_create)

  def finish(out, prepared, states, evaluation, summary):
    with open(os.path.join(out, "samples.txt"), "w") as f:
      f.write("done")
    return {"final_eval": float(np.asarray(evaluation["mse"])[0])}

  # Its best loss starts finite: a stage's run may end a chunk before the
  # first assessment (an infinite state stops a run).
  learner = dataclasses.replace(REG, init=lambda c, k, d: _init(
      c, k, d)._replace(best=jnp.full((), 1e9)))
  stage = stages.Stage(
      name="reg", learner=learner, settings_type=Settings, prepare=prepare,
      finish=finish, report=str, make_config=lambda given: RegConfig(),
      help="", description="", groups=(), refuse=refuse,
      inputs=(("src", "a run directory"),), files=("samples.txt",))
  return stage, calls


def test_a_stage_runs_resumes_and_writes_its_summary_once(tmp_path,
                                                          monkeypatch):
  """One way to create, resume and finish: the stage's file is written
  once the run exists (not again on resume), the resumed run ends where
  an uninterrupted one does, the stage's fields are in the one
  ``summary.json`` (written once per finished run), its inputs recorded."""
  from jaxrl_align.host.rlhf import stages

  src = tmp_path / "src"
  src.mkdir()
  stage, calls = _reg_stage(tmp_path)
  written = []
  real = files.write_json
  monkeypatch.setattr(files, "write_json", lambda path, value: (
      written.append(os.path.basename(path)), real(path, value)))
  whole = stages.run_stage(stage, str(tmp_path / "whole"), inputs={
      "src": str(src)}, progress=False)
  assert written.count("summary.json") == 1
  assert "final_eval" in whole and "per_seed" not in whole  # one seed: flat
  assert json.load(open(tmp_path / "whole" / "summary.json")) == whole
  part = str(tmp_path / "part")
  assert stages.run_stage(stage, part, inputs={"src": str(src)},
                          progress=False, stop_after=6) == {}
  assert calls["created"] == 2
  assert not os.path.exists(os.path.join(part, "summary.json"))
  resumed = stages.run_stage(stage, part, resume=True, progress=False)
  assert calls["created"] == 2  # resuming writes none of its files again
  assert resumed["final_eval"] == whole["final_eval"]
  # Rates count this session's updates only; a finished run resumed ran
  # none, so it has no rate (not its total over a few microseconds).
  assert resumed["updates_this_session"] == 12 - 6
  assert stages.per_second(resumed, "samples") == pytest.approx(
      6 * 4 / resumed["wall_seconds_this_session"])
  # A finished run resumed is left byte for byte as it was: its summary is
  # returned, its inputs not even read (the source is gone).
  os.rename(src, tmp_path / "moved")
  before = _tree_hashes(part)
  again = stages.run_stage(stage, part, resume=True, progress=False)
  assert again == resumed == json.load(open(os.path.join(part,
                                                         "summary.json")))
  assert _tree_hashes(part) == before and calls["created"] == 2
  os.rename(tmp_path / "moved", src)
  # A run that saved its last checkpoint but not its summary (killed
  # while evaluating) trains no update when resumed: it has no rate.
  os.remove(os.path.join(part, "summary.json"))
  again = stages.run_stage(stage, part, resume=True, progress=False)
  assert again["updates_this_session"] == 0
  assert stages.per_second(again, "samples") is None
  assert again["final_eval"] == whole["final_eval"]
  stored = runner.read_run(part)
  assert stored["src_run"] == str(src) and stored["rows"] == 64
  with pytest.raises(runner.RunError, match="needs --src"):
    stages.run_stage(stage, str(tmp_path / "x"), progress=False)
  # A refusal comes after the summary that says why.
  refusing, _ = _reg_stage(tmp_path, refuse=lambda s: "no good")
  with pytest.raises(runner.RunError, match="no good"):
    stages.run_stage(refusing, str(tmp_path / "r"), inputs={"src": str(src)},
                     progress=False)
  assert os.path.exists(tmp_path / "r" / "summary.json")


def test_rlhf_commands_and_run_files_derive_from_the_stages():
  """Each stage is a command with its config's options; the files a run
  directory may hold are the runner's and the stages' declared ones."""
  from jaxrl_align.host import rlhf

  assert set(rlhf.COMMANDS) == set(rlhf.STAGES) | {"prefs"}
  for name, stage in rlhf.STAGES.items():
    command = rlhf.COMMANDS[name]
    assert command.learner == stage.learner.name
    assert command.groups[-1] == ("run", stage.settings_type, None)
    assert files.entries(stage.learner.name) == (
        files.RUN_ENTRIES | set(stage.files))
  assert files.entries("prefs") == {files.MARKER, "summary.json",
                                    "prefs.jsonl"}


@pytest.mark.parametrize("name", ["ppo", "trpo"])
def test_environment_learners_report_their_finite_metrics(name):
  """Each finite metric of an environment learner is one its update
  reports (read from the update's shapes, nothing run): the runner checks
  a finite metric only where it is reported, so a name that never is
  would go unchecked."""
  from jaxrl_align import agents

  learner = agents.LEARNERS[name]
  config = learner.config_type(env_id="CartPole-v1")
  metrics = jax.eval_shape(lambda k: learner.update(
      config, learner.init(config, k, None), None)[1], jax.random.key(0))
  assert set(learner.finite_metrics) <= set(metrics)
