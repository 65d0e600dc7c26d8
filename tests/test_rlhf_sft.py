"""Corpus, tokenizer and pretraining."""

import json
import shutil
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_align.host import checkpoints
from jaxrl_align.host import files
from jaxrl_align.host import rlhf as rlhf_runs
from jaxrl_align.host.rlhf import corpus
from jaxrl_align.rlhf import model as model_lib
from jaxrl_align.rlhf import reward_model
from jaxrl_align.rlhf import sft


def tiny_sft(vocab_size, max_len=32, num_layers=2, **fields):
  return sft.SFTConfig(
      model=model_lib.TransformerConfig(vocab_size=vocab_size,
                                        max_len=max_len,
                                        num_layers=num_layers, num_heads=2,
                                        width=32), **fields)


@pytest.fixture(scope="module")
def documents():
  return corpus.load_documents()


@pytest.fixture(scope="module")
def tokenizer(documents):
  return corpus.train_tokenizer(documents[:100], 400)


def test_corpus_is_real_english_of_50k_words(documents):
  words = sum(len(d.split()) for d in documents)
  assert words >= 50_000 and len(documents) == len(set(documents)) == 293
  text = " ".join(documents).lower()
  for word in (" the ", " government ", " said "):
    assert text.count(word) > 100


def test_split_is_seeded_and_disjoint(documents):
  train, valid = corpus.split(documents, 0.1, seed=3)
  assert (train, valid) == corpus.split(documents, 0.1, seed=3)
  assert len(valid) == 29 and not set(train) & set(valid)
  assert sorted(train + valid) == sorted(documents)
  with pytest.raises(ValueError, match="valid_fraction"):
    corpus.split(documents, 1.0)


def test_tokenizer_round_trips_and_reloads(tokenizer, documents, tmp_path):
  for text in (documents[250], "Ünïcödé — 東京 🙂 tabs\tand  spaces", ""):
    assert tokenizer.decode(tokenizer.encode(text).ids) == text
  path = str(tmp_path / "tokenizer.json")
  tokenizer.save(path)
  again = corpus.load_tokenizer(path)
  assert again.encode(documents[250]).ids == tokenizer.encode(
      documents[250]).ids
  eos, pad = corpus.special_ids(again)
  assert {eos, pad} == {0, 1}
  # BPE merges: fewer tokens than bytes on English.
  # 400 = 256 bytes + 2 specials + 142 merges: ~0.55 tokens per byte here.
  assert len(tokenizer.encode(documents[250]).ids) < 0.6 * len(
      documents[250].encode())
  with pytest.raises(ValueError, match="vocab_size"):
    corpus.train_tokenizer(documents[:2], 100)


def test_left_pad_keeps_the_last_tokens():
  tokens, mask = corpus.left_pad([[5, 6, 7], [8], []], 2, pad_id=1)
  np.testing.assert_array_equal(tokens, [[6, 7], [1, 8], [1, 1]])
  np.testing.assert_array_equal(mask, [[1, 1], [0, 1], [0, 0]])


def test_next_token_loss_against_numpy():
  config = model_lib.TransformerConfig(vocab_size=11, max_len=8, num_layers=1,
                                       num_heads=1, width=8)
  module = model_lib.Transformer(config)
  params = module.init(jax.random.key(0), jnp.zeros((1, 2), jnp.int32))
  tokens = jax.random.randint(jax.random.key(1), (3, 6), 0, 11)
  mask = jnp.ones((3, 6), bool).at[1, :2].set(False)
  loss = jax.jit(lambda p: sft.next_token_loss(module.apply, p, tokens,
                                               mask))(params)
  logits = np.asarray(module.apply(params, tokens, mask)[0], np.float64)
  tok, m = np.asarray(tokens), np.asarray(mask)
  total, count = 0.0, 0
  for b in range(3):
    for t in range(1, 6):
      if m[b, t] and m[b, t - 1]:
        row = logits[b, t - 1]
        total += np.log(np.exp(row - row.max()).sum()) + row.max() - row[tok[b, t]]
        count += 1
  np.testing.assert_allclose(loss, total / count, rtol=1e-5)


def test_sft_config_rejects_bad_fields():
  with pytest.raises(ValueError, match="warmup_steps"):
    sft.SFTConfig(steps=10, warmup_steps=10)
  with pytest.raises(ValueError, match="learning_rate"):
    sft.SFTConfig(learning_rate=0.0)
  with pytest.raises(ValueError, match="eval_every"):
    sft.SFTConfig(eval_every=0)


def test_sft_run_lowers_validation_loss(documents, tmp_path):
  # Tiny model, 60 articles, 120 steps: the held-out loss must fall by at
  # least 1 nat from its initial ~6.0 (log 400); reproducible bit for bit.
  out = str(tmp_path / "sft")
  config = tiny_sft(400, steps=120, batch_size=16, learning_rate=3e-3,
                    warmup_steps=10, eval_every=40)
  settings = rlhf_runs.SFTRunSettings(num_samples=2)
  summary = rlhf_runs.run_sft(out, config, settings,
                              documents=documents[:60], progress=False)
  assert summary["valid_loss_best"] < summary["valid_loss_initial"] - 1.0
  rows = [json.loads(l) for l in open(os.path.join(out, "metrics.jsonl"))]
  assert [r["update"] for r in rows] == list(range(1, 121))
  assessed = [r for r in rows if r["valid_loss"] is not None]
  assert [r["update"] for r in assessed] == [40, 80, 120]
  best = min(assessed, key=lambda r: r["valid_loss"])
  if best["valid_loss"] < summary["valid_loss_initial"]:
    assert summary["best_step"] == best["update"]
  np.testing.assert_allclose(summary["valid_loss_best"],
                             min(best["valid_loss"],
                                 summary["valid_loss_initial"]), rtol=1e-6)
  model_config, params, tokenizer = rlhf_runs.load_sft(out)
  assert model_config.max_len == 32
  assert tokenizer.get_vocab_size() == 400
  samples = open(os.path.join(out, "samples.txt")).read()
  assert samples.count("PROMPT:") == 2
  again = rlhf_runs.run_sft(str(tmp_path / "again"), config, settings,
                            documents=documents[:60], progress=False)
  assert again["valid_loss_best"] == summary["valid_loss_best"]
  assert again["samples"] == summary["samples"]
  with pytest.raises(ValueError, match="not empty"):
    rlhf_runs.run_sft(out, config, settings, documents=documents[:60],
                      progress=False)
  with pytest.raises(ValueError, match="vocab_size"):
    rlhf_runs.run_sft(str(tmp_path / "never"), tiny_sft(100), settings,
                      documents=documents[:60], progress=False)
  assert not os.path.exists(tmp_path / "never")


def test_sft_run_resumes_bit_for_bit(documents, tmp_path):
  # Stopped after 20 of 40 steps (a checkpoint) and resumed: the same kept
  # parameters and metrics as the run that was not stopped.
  config = tiny_sft(300, num_layers=1, steps=40, batch_size=8,
                    warmup_steps=5, eval_every=10)
  settings = rlhf_runs.SFTRunSettings(num_samples=1)
  whole = str(tmp_path / "whole")
  rlhf_runs.run_sft(whole, config, settings, documents=documents[:40],
                    progress=False)
  part = str(tmp_path / "part")
  assert rlhf_runs.run_sft(part, config, settings, documents=documents[:40],
                           progress=False, stop_after=20) == {}
  assert not os.path.exists(os.path.join(part, "model"))
  rlhf_runs.run_sft(part, resume=True, documents=documents[:40],
                    progress=False)
  assert files.read_metrics(part) == files.read_metrics(whole)
  _, a, _ = rlhf_runs.load_sft(part)
  _, b, _ = rlhf_runs.load_sft(whole)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)
  # Finished, resumed again through the command line: reported, and left
  # byte for byte as it was (its documents are not even read again).
  from jaxrl_align.host import cli

  def hashes():
    return {os.path.join(d, n): open(os.path.join(d, n), "rb").read()
            for d, _, names in os.walk(part) for n in names}

  before = hashes()
  assert cli.main(["rlhf", "sft", "--resume", part, "--no-progress"]) == 0
  assert hashes() == before


def test_pipeline_sft_prefs_rm_end_to_end(documents, tmp_path, capsys):
  # The three commands at tiny size, through the CLI: each writes its run
  # directory and the numbers it reports are in range.
  from jaxrl_align.host import cli

  docs = documents[:40]
  sft_dir = str(tmp_path / "sft")
  summary = rlhf_runs.run_sft(
      sft_dir, tiny_sft(300, num_layers=1, steps=30, batch_size=8,
                        warmup_steps=5, eval_every=10),
      rlhf_runs.SFTRunSettings(num_samples=1), documents=docs,
      progress=False)
  assert summary["valid_loss_best"] < summary["valid_loss_initial"]
  prefs_dir = str(tmp_path / "prefs")
  prefs = rlhf_runs.run_prefs(
      prefs_dir, sft_dir, rlhf_runs.PrefsSettings(
          num_prompts=20, prompt_tokens=8, response_tokens=24,
          samples_per_prompt=4, batch_size=8, valid_fraction=0.25),
      documents=docs, progress=False)
  records = [json.loads(l) for l in open(os.path.join(prefs_dir,
                                                      "prefs.jsonl"))]
  # 20 prompts x 6 pairs, less the annotators' ties.
  assert len(records) == prefs["pairs"] == 120 - prefs["ties_left_out"]
  assert prefs["pairs"] >= 10
  assert {r["split"] for r in records} == {"train", "valid"}
  assert all(0 <= r["annotator"] < 10 for r in records)
  # Token ids as sampled, the prompt/response boundary kept: the ids decode
  # to the texts (the stop token, last where emitted, left out of them),
  # and the reward model's sequences are prompt ids then response ids.
  _, _, tokenizer = rlhf_runs.load_sft(sft_dir)
  eos = tokenizer.token_to_id("<|endoftext|>")
  for r in records:
    assert len(r["prompt_ids"]) == 8 and tokenizer.decode(
        r["prompt_ids"]) == r["prompt"]
    for side in ("chosen", "rejected"):
      ids = r[f"{side}_ids"]
      assert 1 <= len(ids) <= 24 and eos not in ids[:-1]
      assert tokenizer.decode([t for t in ids if t != eos]) == r[side]
  from jaxrl_align.host.rlhf import pair_files
  from jaxrl_align.host.rlhf import rm_stage as rm_host

  reward_pairs = rm_host._reward_pairs(records[:3], pad=0)
  for i, r in enumerate(records[:3]):
    got = np.asarray(reward_pairs.rejected)[i][np.asarray(
        reward_pairs.rejected_mask)[i]]
    assert got.tolist() == r["prompt_ids"] + r["rejected_ids"]
  # A preference run from before token ids were recorded: refused in one
  # line that names the command rebuilding it.
  old = str(tmp_path / "old-prefs")
  shutil.copytree(prefs_dir, old)
  with open(os.path.join(old, pair_files.FILE), "w") as f:
    f.writelines(json.dumps({k: v for k, v in r.items()
                             if not k.endswith("_ids")}) + "\n"
                 for r in records)
  capsys.readouterr()
  assert cli.main(["rlhf", "rm", "--out", str(tmp_path / "rm-old"), "--sft",
                   sft_dir, "--prefs", old, "--no-progress"]) == 2
  err = capsys.readouterr().err
  assert "text only" in err and "jaxrl-align rlhf prefs" in err
  assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
  assert not os.path.exists(tmp_path / "rm-old")
  # A torn line, ids that are not token ids, an id outside the vocabulary:
  # each refused in one line naming what is wrong, nothing written.
  lines = [json.dumps(r) + "\n" for r in records]
  bad_id = dict(records[0], chosen_ids=[10 ** 6] + records[0]["chosen_ids"])
  for text, words in (
      ("".join(lines[:3]) + '{"prompt": "to', "line 4 of prefs.jsonl"),
      ("".join(lines).replace('"chosen_ids": [', '"chosen_ids": ["a", ', 1),
       "not lists of non-negative integers"),
      (json.dumps(bad_id) + "\n" + "".join(lines[1:]), "vocabulary")):
    with open(os.path.join(old, pair_files.FILE), "w") as f:
      f.write(text)
    assert cli.main(["rlhf", "rm", "--out", str(tmp_path / "rm-old"),
                     "--sft", sft_dir, "--prefs", old, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert words in err and len(err.strip().splitlines()) == 1, err
    assert not os.path.exists(tmp_path / "rm-old")
  assert 0 <= prefs["annotator_agreement"] <= 1
  assert prefs["generated_tokens_per_second"] > 0
  rm_dir = str(tmp_path / "rm")
  code = cli.main(["rlhf", "rm", "--out", rm_dir, "--sft", sft_dir,
                   "--prefs", prefs_dir, "--epochs", "2", "--batch-size", "5",
                   "--dropout", "0.1", "--body-learning-rate-scale", "0.5",
                   "--dev-fraction", "0.25", "--eval-every", "2",
                   "--no-progress"])
  assert code == 0
  rm = json.load(open(os.path.join(rm_dir, "summary.json")))
  assert (rm["train_pairs"] + rm["dev_pairs"] + rm["valid_pairs"]
          == prefs["pairs"])
  assert rm["valid_pairs"] == prefs["valid_pairs"]
  assert 0 <= rm["valid_accuracy_vs_annotators"] <= 1
  # The kept parameters are those of the best development accuracy logged
  # (strictly better than the pretrained parameters' to be kept).
  logged = [json.loads(l) for l in open(os.path.join(rm_dir,
                                                     "metrics.jsonl"))]
  assert logged[-1]["update"] == rm["steps"]
  assessed = [m for m in logged if m["dev_accuracy"] is not None]
  assert assessed and all(m["update"] % 2 == 0 or m["update"] == rm["steps"]
                          for m in assessed)
  best = max(m["dev_accuracy"] for m in assessed)
  assert rm["dev_accuracy"] >= best - 1e-6
  if rm["best_step"] > 0:
    first_best = min(m["update"] for m in assessed
                     if m["dev_accuracy"] == rm["dev_accuracy"])
    assert rm["best_step"] == first_best
  store = checkpoints.Checkpoints(os.path.join(rm_dir, "model"), keep=1)
  assert store.steps() == [rm["best_step"]]
  store.close()
  # A reward model that never moves from its zero head is refused, not
  # normalised by a zero standard deviation; the summary says so.
  flat = str(tmp_path / "flat")
  assert cli.main(["rlhf", "rm", "--out", flat, "--sft", sft_dir, "--prefs",
                   prefs_dir, "--epochs", "1", "--batch-size", "5",
                   "--learning-rate", "1e-30", "--no-progress"]) == 2
  assert json.load(open(os.path.join(flat, "summary.json")))[
      "model_saved"] is False
  assert not os.path.exists(os.path.join(flat, "model"))
  # prefs whose pairs are all ties (one-token continuations): refused.
  with pytest.raises(ValueError, match="training and .* held-out pairs"):
    rlhf_runs.run_prefs(
        str(tmp_path / "ties"), sft_dir, rlhf_runs.PrefsSettings(
            num_prompts=4, prompt_tokens=8, response_tokens=1,
            samples_per_prompt=2, batch_size=4, valid_fraction=0.25),
        documents=docs, progress=False)
  # Unknown option and bad value: refused with exit code 2, nothing run.
  assert cli.main(["rlhf", "prefs", "--out", str(tmp_path / "x"), "--sft",
                   sft_dir, "--num-promts", "3"]) == 2
  assert cli.main(["rlhf", "prefs", "--out", str(tmp_path / "x"), "--sft",
                   sft_dir, "--samples-per-prompt", "1"]) == 2
  assert not os.path.exists(tmp_path / "x")
  assert files.is_run_dir(rm_dir)


def test_rm_dev_split_takes_whole_prompts_and_is_seeded():
  from jaxrl_align.host.rlhf import rm_stage as rm

  records = [{"prompt": f"p{i % 16}", "n": i} for i in range(64)]
  train, dev = rm.dev_split(records, 0.25, seed=3)
  assert len({r["prompt"] for r in dev}) == 4  # a quarter of 16 prompts
  assert not {r["prompt"] for r in dev} & {r["prompt"] for r in train}
  assert sorted(r["n"] for r in train + dev) == list(range(64))
  assert rm.dev_split(records, 0.25, seed=3) == (train, dev)
  assert rm.dev_split(records, 0.25, seed=4) != (train, dev)
  with pytest.raises(ValueError, match="dev_fraction"):
    rlhf_runs.RMRunSettings(dev_fraction=1.0)
  with pytest.raises(ValueError, match="train_pairs"):
    reward_model.RMConfig().num_updates
