"""Flags of the experiment script reach the config they name."""

from __future__ import annotations

import pytest
from absl import flags

from experiments import movielens


@pytest.fixture
def parse():
  def parse(*argv):
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["movielens", *argv])
    return movielens.config_from_flags(flags.FLAGS.variant)

  yield parse
  flags.FLAGS.unparse_flags()


def test_ksparse_options_as_published(parse):
  config = parse(
    "--variant=ksparse",
    "--tied",
    "--k=25",
    "--k_start=100",
    "--k_schedule_fraction=0.25",
    "--eval_k_multiplier=3",
  )
  assert config.tied and config.k == 25 and config.k_start == 100
  assert config.k_schedule_fraction == 0.25
  assert config.eval_k_multiplier == 3.0
  assert not parse("--variant=ksparse").tied


def test_sparsity_and_pretraining_flags(parse):
  config = parse(
    "--variant=stacked",
    "--pretrain=rbm",
    "--pretrain_epochs=4",
    "--pretrain_learning_rate=0.002",
    "--pretrain_noise_rate=0.1",
    "--sparsity_target=0.1",
    "--sparsity_weight=0.5",
  )
  assert (config.pretrain, config.pretrain_epochs) == ("rbm", 4)
  assert config.pretrain_learning_rate == 0.002
  assert config.pretrain_noise_rate == 0.1
  assert (config.sparsity_target, config.sparsity_weight) == (0.1, 0.5)
  assert parse("--variant=stacked").pretrain_epochs == 0
  with pytest.raises(ValueError, match="k_start must be an integer"):
    parse("--variant=ksparse", "--k_start=-1")


def test_split_defaults_to_the_data_sets_protocol(parse):
  assert parse("--variant=autorec").split == "u1"
  assert parse("--variant=autorec", "--dataset=ml-1m").split == "random"
  config = parse("--variant=autorec", "--dataset=ml-1m", "--split=u2")
  assert config.split == "u2"  # refused later, when the data is read


def test_local_kernel_flags(parse):
  config = parse(
    "--variant=autorec",
    "--kernel_dims=5",
    "--kernel_weight=0.006",
    "--hidden_sizes=500,500",
  )
  assert (config.kernel_dims, config.kernel_weight) == (5, 0.006)
  assert config.hidden_sizes == (500, 500)
  assert parse("--variant=autorec").kernel_dims == 0
  with pytest.raises(ValueError, match="needs kernel_dims > 0"):
    parse("--variant=autorec", "--kernel_weight=0.5")
