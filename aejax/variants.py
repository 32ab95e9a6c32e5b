"""The named variants: one commented place for every default.

A ``Config`` describes one training run: data, model, loss, optimizer and
the members trained together. ``VARIANTS`` holds each variant's defaults;
``get_config`` applies overrides and validates the result before anything
is compiled, so a bad value fails at once with its name in the message.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Mapping
from typing import Any

from aejax import losses, optim
from aejax.models import autoencoder

# Hyper-parameters that may differ between members of one compiled run.
SWEEPABLE = (
  "learning_rate",
  "weight_decay",
  "k",
  "noise_rate",
  "sparsity_weight",
  "l2_weight",
)

# Predictors used where the model has no information (cold start).
COLD_START_PREDICTORS = ("mean", "bias")
LR_SCHEDULES = ("constant", "cosine")


OUTPUT_BIASES = ("zeros", "column_mean")


@dataclasses.dataclass(frozen=True)
class Config:
  """Everything that defines a run. Every field is validated."""

  # Name of the variant these defaults came from.
  variant: str = "plain"

  # --- data ---
  # ml-100k or ml-1m.
  dataset: str = "ml-100k"
  # u1..u5, ua, ub (ML-100k official splits) or random.
  split: str = "u1"
  # Rows are users (the tutorial) or items (I-AutoRec).
  orientation: str = "user"
  # Held-out share of a random split.
  test_fraction: float = 0.1
  # Lose the first rating of each split file, as the tutorial's reader does.
  drop_first_line: bool = False
  # Share of the training ratings held out, seeded by ``seed``, to choose
  # the epoch (and the swept setting) on; 0 trains on all of them and keeps
  # the last epoch. The test ratings are scored once, after training.
  valid_fraction: float = 0.0

  # --- model ---
  # Widths of the hidden layers; the middle one is the code.
  hidden_sizes: tuple[int, ...] = (500,)
  # Activation of every hidden layer.
  activation: str = "sigmoid"
  # Activation of the reconstruction.
  output_activation: str = "identity"
  # Decoder weights are the encoder's, transposed (mirrored sizes only).
  tied: bool = False
  # Parameter initialisation: default (LeCun normal), glorot or torch.
  init: str = "default"
  # Initial output bias: zeros, or each column's mean training rating, so
  # that training starts from the item-mean predictor (user rows).
  output_bias: str = "zeros"
  # Dimensions of the learned embeddings of a local kernel that gates
  # every layer's weights, W * max(0, 1 - ||u_i - v_j||^2) (Muller, Martel
  # and Indiveri, 2018; GLocal-K, Han et al., 2021); 0 keeps dense layers.
  kernel_dims: int = 0
  # Weight lambda_s of the penalty (lambda_s / 2) sum K_ij^2 on the kernel
  # values, added like the L2 penalty (in proportion to the batch's rows).
  kernel_weight: float = 0.0
  # Units kept in the code layer by k-sparse selection; 0 keeps all.
  k: int = 0
  # k-sparse schedule (Makhzani and Frey, 2013): training starts by keeping
  # k_start units and lowers the count linearly to k over the first
  # k_schedule_fraction of the epochs. 0 keeps k from the start.
  k_start: int = 0
  k_schedule_fraction: float = 0.5
  # Evaluation keeps round(alpha k) code units (alpha >= 1, capped at the
  # code width): more units than in training, as the paper recommends.
  eval_k_multiplier: float = 1.0
  # Share of observed inputs zeroed during training (masking noise).
  noise_rate: float = 0.0
  # KL sparsity penalty: target mean activation rho and weight beta.
  sparsity_target: float = 0.05
  sparsity_weight: float = 0.0

  # --- greedy layer-wise pretraining (mirrored hidden sizes only) ---
  # How each encoder layer is pretrained before the whole network is
  # fine-tuned: denoising (a denoising autoencoder on the codes of the
  # layer below, Vincent et al., 2010) or rbm (a restricted Boltzmann
  # machine trained by CD-1, Hinton and Salakhutdinov, 2006).
  pretrain: str = "denoising"
  # Epochs per layer; 0 skips pretraining (plain training of the network).
  pretrain_epochs: int = 0
  # Learning rate of the run's optimizer while pretraining a layer (each
  # member keeps its own weight decay).
  pretrain_learning_rate: float = 1e-2
  # Masking noise of each denoising layer.
  pretrain_noise_rate: float = 0.25

  # --- loss and optimizer ---
  # observed: mean over a batch's ratings; columns: the tutorial's MSELoss;
  # sum: sum over a batch's ratings (AutoRec's objective).
  loss_normalization: str = "observed"
  # Weight lambda of AutoRec's L2 penalty (lambda / 2) ||W||^2 on every
  # kernel (not the biases), added to the loss in proportion to the
  # batch's share of the rows, so one epoch adds it once.
  l2_weight: float = 0.0
  # rmsprop (decoupled weight decay), torch_rmsprop (coupled L2) or adamw
  # (Adam with decoupled weight decay).
  optimizer: str = "rmsprop"
  learning_rate: float = 1e-3
  weight_decay: float = 0.0
  # constant, or cosine: the learning rate (and with it the decoupled
  # decay) falls from its value to 0 along a half cosine over all epochs.
  lr_schedule: str = "constant"
  # Smoothing of the squared-gradient average (RMSprop's decay, Adam's
  # b2), and its epsilon.
  rms_decay: float = 0.9
  rms_eps: float = 1e-8
  # Step with the sum of all gradients so far (the tutorial's behaviour).
  accumulate_gradients: bool = False
  epochs: int = 50
  # Save a checkpoint after every this many epochs, and after the last one.
  # It may change when a run is resumed, as may epochs.
  checkpoint_every: int = 10
  # Rows per training step; 1 is the tutorial's one user per step.
  batch_size: int = 32
  # Visit the rows in a new random order each epoch (else in index order,
  # as the tutorial's loop over user ids does).
  shuffle: bool = True
  # Rows per evaluation step (memory only; results do not depend on it).
  eval_batch_size: int = 256
  # Stop once no member's validation RMSE has improved for this many
  # epochs; 0 never stops early. Needs a validation set.
  patience: int = 0

  # --- evaluation ---
  # Clip predictions to the training ratings' range before scoring.
  clip_predictions: bool = True
  # Where the model has no information (a column never rated in training,
  # or a row with no training rating) predict with cold_start_predictor
  # instead of the model.
  cold_start_fallback: bool = True
  # mean: the training mean; bias: the baseline mu + b_user + b_item of
  # the training ratings (a bias never estimated is 0).
  cold_start_predictor: str = "mean"
  # Ridge weight of the user and item biases (baseline and fallback).
  bias_regularization: float = 5.0
  # Recall@K and NDCG@K are reported for these K.
  ranking_cutoffs: tuple[int, ...] = (10, 20)
  # A held-out rating at least this high is a relevant item for ranking.
  relevance_threshold: float = 4.0

  # --- members ---
  # Seed of the first member; member seeds are seed, seed + 1, ...
  seed: int = 0
  # Number of seeds per swept setting.
  seeds: int = 1
  # Also score each setting's ensemble, the mean prediction of its seeds,
  # and choose its members jointly: the epoch whose ensemble has the
  # lowest validation RMSE.
  ensemble: bool = False
  # Swept hyper-parameters: ((name, (value, ...)), ...); members are the
  # cartesian product of these values with the seeds.
  sweep: tuple[tuple[str, tuple[float, ...]], ...] = ()

  def to_json(self) -> dict[str, Any]:
    """A JSON-ready dict of the fields.

    Returns:
      Every field by name; tuples become lists.
    """
    return json.loads(json.dumps(dataclasses.asdict(self)))

  @classmethod
  def from_json(cls, fields: Mapping[str, Any]) -> Config:
    """The config that ``to_json`` wrote, validated.

    Args:
      fields: the fields by name; one left out takes its default, and the
        lists of ``hidden_sizes``, ``ranking_cutoffs`` and ``sweep``
        become tuples.

    Returns:
      The validated ``Config``.

    Raises:
      ValueError: an unknown field or a bad value.
    """
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(fields) - known)
    if unknown:
      raise ValueError(f"unknown config fields: {', '.join(unknown)}")
    values = dict(fields)
    for name in ("hidden_sizes", "ranking_cutoffs"):
      if name in values:
        values[name] = tuple(values[name])
    if "sweep" in values:
      values["sweep"] = tuple(
        (name, tuple(grid)) for name, grid in values["sweep"]
      )
    return validate(cls(**values))


_BASE = Config()

VARIANTS: dict[str, Config] = {
  # One sigmoid hidden layer, linear output. Weight decay is the only
  # regulariser: without it the 1.7M parameters fit the 80,000 training
  # ratings (train RMSE 0.2) and test RMSE climbs past 1.1.
  "plain": dataclasses.replace(
    _BASE,
    variant="plain",
    hidden_sizes=(500,),
    learning_rate=3e-4,
    weight_decay=3.0,
    epochs=60,
    batch_size=32,
  ),
  # Only the k largest of 500 code units survive per user (Makhzani and
  # Frey, 2013). The paper's linear code fails on rating rows: every target
  # rating is also an input, so a linear code learns to copy the rated
  # movies and leaves the output biases near 0 for the others (ML-100k u1:
  # train RMSE 0.5, test RMSE 1.3 to 1.4; tied weights, a k schedule or
  # alpha x k at evaluation make it worse). A sigmoid code is bounded and
  # cannot copy; it keeps 100 units, and trains longer than plain since
  # each step updates only the kept units.
  "ksparse": dataclasses.replace(
    _BASE,
    variant="ksparse",
    hidden_sizes=(500,),
    activation="sigmoid",
    k=100,
    learning_rate=1e-3,
    weight_decay=3.0,
    epochs=160,
    batch_size=32,
  ),
  # Masking noise on the input, clean target (Vincent et al., 2008).
  # The noise regularises too, so it trains longer than plain before
  # over-fitting.
  "denoising": dataclasses.replace(
    _BASE,
    variant="denoising",
    hidden_sizes=(500,),
    noise_rate=0.25,
    learning_rate=3e-4,
    weight_decay=3.0,
    epochs=100,
    batch_size=32,
  ),
  # The tutorial's 20-10-20 sigmoid stack. Its narrow code is its
  # regulariser; it over-fits after about 40 epochs at this rate.
  "stacked": dataclasses.replace(
    _BASE,
    variant="stacked",
    hidden_sizes=(20, 10, 20),
    learning_rate=1e-2,
    weight_decay=0.0,
    epochs=40,
    batch_size=32,
  ),
  # The tutorial's PyTorch model as it is written: 1682-20-10-20-1682 with
  # sigmoid hidden layers, one user per step in id order, PyTorch's
  # MSELoss over the zeroed output (squared error / number of movies),
  # torch.optim.RMSprop(lr=0.01, weight_decay=0.5) with its coupled L2,
  # alpha 0.99 and epsilon outside the square root, PyTorch's default
  # Linear initialisation, 200 epochs. It scores raw predictions (no
  # clipping, no fallback), as the tutorial does. Its two accidents, the
  # gradient sum never cleared and the lost first line of each file, are
  # off here and switched on by FAITHFUL.
  "course": dataclasses.replace(
    _BASE,
    variant="course",
    hidden_sizes=(20, 10, 20),
    activation="sigmoid",
    output_activation="identity",
    init="torch",
    loss_normalization="columns",
    optimizer="torch_rmsprop",
    learning_rate=0.01,
    weight_decay=0.5,
    rms_decay=0.99,
    rms_eps=1e-8,
    epochs=200,
    batch_size=1,
    shuffle=False,
    clip_predictions=False,
    cold_start_fallback=False,
  ),
  # I-AutoRec (Sedhain et al., 2015): each item's vector of user ratings
  # is a row; one sigmoid hidden layer of 500, identity output; the sum of
  # squared errors over observed ratings plus (lambda / 2) ||W||^2. The
  # paper trains with L-BFGS or Rprop; here Adam on mini-batches of items
  # with a cosine schedule, its b2 the shared rms_decay of 0.9 (the value
  # every figure in the README was trained with). lambda = 240 had the
  # lowest validation RMSE on ML-100k u1 among 60 to 3000 (ML-1M wants 200
  # to 400 and batches of 256, see the README). A validation share picks
  # the epoch, and cold-start ratings get the bias baseline.
  "autorec": dataclasses.replace(
    _BASE,
    variant="autorec",
    orientation="item",
    hidden_sizes=(500,),
    activation="sigmoid",
    output_activation="identity",
    loss_normalization="sum",
    l2_weight=240.0,
    optimizer="adamw",
    learning_rate=1e-3,
    weight_decay=0.0,
    lr_schedule="cosine",
    epochs=150,
    batch_size=32,
    valid_fraction=0.05,
    patience=30,
    cold_start_predictor="bias",
  ),
}

# I-AutoRec with locally kernelised layers, after the local kernel of
# Sparse FC (Muller, Martel and Indiveri, 2018) and GLocal-K (Han et al.,
# 2021): two sigmoid hidden layers of 500 on item rows, every weight
# gated by max(0, 1 - ||u_i - v_j||^2) with learned 5-dimensional
# embeddings, and GLocal-K's penalty on the kernel values. On ML-100k u1
# validation (60-epoch cosine schedule, one seed) lambda 60 beat 10, 20
# and 240; the deeper gated network needs a quarter of the dense model's
# lambda. Adam, the schedule and the selection are autorec's.
VARIANTS["kernel"] = dataclasses.replace(
  VARIANTS["autorec"],
  variant="kernel",
  hidden_sizes=(500, 500),
  kernel_dims=5,
  kernel_weight=0.006,
  l2_weight=60.0,
  epochs=60,
)

# What reproduces the tutorial's published figures on top of the course
# variant: PyTorch adds every backward() into .grad and the tutorial never
# calls zero_grad(), so each step uses the sum of all gradients so far; its
# CSV reader takes the first rating of each file for a header.
FAITHFUL: dict[str, Any] = {
  "accumulate_gradients": True,
  "drop_first_line": True,
}

# More hidden units than movies, kept mostly silent by a KL penalty on each
# unit's mean activation over the batch (Ng's sparse autoencoder). So wide a
# layer still overfits the 943 users: weight decay, a low learning rate and
# 30 epochs hold it back.
VARIANTS["sparse"] = dataclasses.replace(
  _BASE,
  variant="sparse",
  hidden_sizes=(2000,),
  sparsity_target=0.01,
  sparsity_weight=1e-2,
  learning_rate=5e-4,
  weight_decay=1.0,
  epochs=30,
  batch_size=32,
)

# The stacked network, each encoder layer first pretrained greedily as a
# denoising autoencoder on the codes of the layer below (Vincent et al.,
# 2010), then fine-tuned whole. With pretrain_epochs=0 it is "stacked".
VARIANTS["stacked_pretrained"] = dataclasses.replace(
  VARIANTS["stacked"],
  variant="stacked_pretrained",
  pretrain="denoising",
  pretrain_epochs=10,
  pretrain_learning_rate=1e-2,
  pretrain_noise_rate=0.25,
)

# A deep autoencoder (Hinton and Salakhutdinov, 2006): RBMs trained by CD-1
# layer by layer, the first with Gaussian visible units on the ratings,
# unrolled into encoder and decoder, then fine-tuned.
VARIANTS["deep"] = dataclasses.replace(
  _BASE,
  variant="deep",
  hidden_sizes=(250, 50, 250),
  pretrain="rbm",
  pretrain_epochs=20,
  pretrain_learning_rate=1e-3,
  learning_rate=1e-3,
  weight_decay=0.3,
  epochs=30,
  batch_size=32,
)

# The variants that ``--variant=all`` compares: user rows trained on the
# whole training split, the tutorial's protocol. The item-row AutoRec
# variants carve a validation set from that split and choose their epoch
# on it, so they are compared in the README's results instead.
COMPARED = tuple(
  name
  for name, c in VARIANTS.items()
  if c.orientation == "user" and c.valid_fraction == 0
)

PRETRAINING = ("denoising", "rbm")


def _check(ok: bool, message: str) -> None:
  if not ok:
    raise ValueError(message)


def validate(config: Config) -> Config:
  """Checks every field; raises ValueError naming the first bad one.

  Args:
    config: the configuration to check.

  Returns:
    ``config`` itself, unchanged.

  Raises:
    ValueError: the first field with a bad value, named with the value.
  """
  c = config
  _check(
    c.variant in VARIANTS,
    f"unknown variant {c.variant!r}; known: {', '.join(VARIANTS)}",
  )
  _check(
    c.dataset in ("ml-100k", "ml-1m"),
    f"dataset must be ml-100k or ml-1m, not {c.dataset!r}",
  )
  _check(
    c.orientation in ("user", "item"),
    f"orientation must be user or item, not {c.orientation!r}",
  )
  _check(
    0.0 < c.test_fraction < 1.0,
    f"test_fraction must lie in (0, 1), not {c.test_fraction}",
  )
  _check(
    0.0 <= c.valid_fraction < 1.0,
    f"valid_fraction must lie in [0, 1), not {c.valid_fraction}",
  )
  _check(
    isinstance(c.patience, int) and c.patience >= 0,
    f"patience must be a non-negative integer, not {c.patience!r}",
  )
  _check(
    not c.ensemble or c.seeds >= 2,
    f"ensemble averages seeds and needs seeds >= 2, not {c.seeds}",
  )
  _check(
    c.patience == 0 or c.valid_fraction > 0,
    f"patience={c.patience} needs a validation set (valid_fraction > 0)",
  )
  _check(
    c.cold_start_predictor in COLD_START_PREDICTORS,
    f"cold_start_predictor {c.cold_start_predictor!r} unknown; known: "
    f"{', '.join(COLD_START_PREDICTORS)}",
  )
  _check(
    c.bias_regularization >= 0.0,
    f"bias_regularization must be non-negative, not {c.bias_regularization}",
  )
  _check(
    len(c.ranking_cutoffs) > 0
    and all(isinstance(k, int) and k > 0 for k in c.ranking_cutoffs),
    f"ranking_cutoffs must be positive integers, not {c.ranking_cutoffs}",
  )
  _check(
    c.lr_schedule in LR_SCHEDULES,
    f"lr_schedule {c.lr_schedule!r} unknown; known: {', '.join(LR_SCHEDULES)}",
  )
  _check(
    len(c.hidden_sizes) > 0
    and all(isinstance(h, int) and h > 0 for h in c.hidden_sizes),
    f"hidden_sizes must be positive integers, not {c.hidden_sizes}",
  )
  for field in ("activation", "output_activation"):
    value = getattr(c, field)
    _check(
      value in autoencoder.ACTIVATIONS,
      f"{field} {value!r} unknown; known: {', '.join(autoencoder.ACTIVATIONS)}",
    )
  _check(
    not c.tied or autoencoder.can_tie(c.hidden_sizes),
    f"tied weights need mirrored hidden_sizes, not {c.hidden_sizes}",
  )
  _check(
    isinstance(c.kernel_dims, int) and c.kernel_dims >= 0,
    f"kernel_dims must be a non-negative integer, not {c.kernel_dims!r}",
  )
  _check(
    c.kernel_weight >= 0.0,
    f"kernel_weight must be non-negative, not {c.kernel_weight}",
  )
  _check(
    c.kernel_weight == 0.0 or c.kernel_dims > 0,
    f"kernel_weight={c.kernel_weight} needs kernel_dims > 0",
  )
  _check(
    c.kernel_dims == 0 or not c.tied,
    f"kernel_dims={c.kernel_dims} needs untied weights (tied=False)",
  )
  _check(
    c.kernel_dims == 0 or c.pretrain_epochs == 0,
    f"kernel_dims={c.kernel_dims} cannot be pretrained layer-wise "
    f"(pretrain_epochs={c.pretrain_epochs})",
  )
  _check(
    c.init in autoencoder.INITS,
    f"init {c.init!r} unknown; known: {', '.join(autoencoder.INITS)}",
  )
  _check(
    c.output_bias in OUTPUT_BIASES,
    f"output_bias {c.output_bias!r} unknown; known: {', '.join(OUTPUT_BIASES)}",
  )
  _check(
    c.loss_normalization in losses.NORMALIZATIONS,
    f"loss_normalization {c.loss_normalization!r} unknown; known: "
    f"{', '.join(losses.NORMALIZATIONS)}",
  )
  _check(
    c.optimizer in optim.OPTIMIZERS,
    f"optimizer {c.optimizer!r} unknown; known: {', '.join(optim.OPTIMIZERS)}",
  )
  _check(
    not c.accumulate_gradients or c.optimizer == "torch_rmsprop",
    "accumulate_gradients needs optimizer=torch_rmsprop",
  )
  _check(
    0.0 <= c.rms_decay < 1.0, f"rms_decay must lie in [0, 1), not {c.rms_decay}"
  )
  _check(c.rms_eps > 0.0, f"rms_eps must be positive, not {c.rms_eps}")
  for field in (
    "epochs",
    "checkpoint_every",
    "batch_size",
    "eval_batch_size",
    "seeds",
  ):
    value = getattr(c, field)
    _check(
      isinstance(value, int) and value > 0,
      f"{field} must be a positive integer, not {value!r}",
    )
  _check(
    isinstance(c.seed, int) and c.seed >= 0,
    f"seed must be a non-negative integer, not {c.seed!r}",
  )
  _check(
    0.0 < c.sparsity_target < 1.0,
    f"sparsity_target must lie in (0, 1), not {c.sparsity_target}",
  )
  _check(
    0.0 < c.relevance_threshold <= 5.0,
    "relevance_threshold must lie in (0, 5], the rating scale, not "
    f"{c.relevance_threshold}",
  )
  code = c.hidden_sizes[autoencoder.code_index(c.hidden_sizes)]
  _check(
    isinstance(c.k_start, int) and 0 <= c.k_start <= code,
    f"k_start must be an integer in [0, {code}] (the code layer's width), "
    f"not {c.k_start!r}",
  )
  _check(
    0.0 < c.k_schedule_fraction <= 1.0,
    f"k_schedule_fraction must lie in (0, 1], not {c.k_schedule_fraction}",
  )
  _check(
    c.eval_k_multiplier >= 1.0,
    f"eval_k_multiplier must be at least 1, not {c.eval_k_multiplier}",
  )
  _check(
    c.pretrain in PRETRAINING,
    f"pretrain {c.pretrain!r} unknown; known: {', '.join(PRETRAINING)}",
  )
  _check(
    isinstance(c.pretrain_epochs, int) and c.pretrain_epochs >= 0,
    f"pretrain_epochs must be a non-negative integer, not "
    f"{c.pretrain_epochs!r}",
  )
  _check(
    c.pretrain_learning_rate > 0.0,
    f"pretrain_learning_rate must be positive, not {c.pretrain_learning_rate}",
  )
  _check(
    0.0 <= c.pretrain_noise_rate < 1.0,
    f"pretrain_noise_rate must lie in [0, 1), not {c.pretrain_noise_rate}",
  )
  if c.pretrain_epochs > 0:
    _check(
      autoencoder.can_tie(c.hidden_sizes),
      f"layer-wise pretraining needs mirrored hidden_sizes (each decoder "
      f"layer the mirror of an encoder layer), not {c.hidden_sizes}",
    )
  if c.pretrain_epochs > 0 and c.pretrain == "rbm":
    _check(
      c.activation == "sigmoid",
      f"rbm pretraining needs activation=sigmoid (binary hidden units), "
      f"not {c.activation!r}",
    )
    _check(
      c.output_activation == "identity",
      f"rbm pretraining needs output_activation=identity (Gaussian visible "
      f"units), not {c.output_activation!r}",
    )
  names = [name for name, _ in c.sweep]
  _check(len(set(names)) == len(names), f"a swept name repeats: {names}")
  for name, values in c.sweep:
    _check(
      name in SWEEPABLE,
      f"cannot sweep {name!r}; sweepable: {', '.join(SWEEPABLE)}",
    )
    _check(len(values) > 0, f"sweep of {name} has no values")
  for member in members(c):
    _validate_member(c, member)
  return c


def _validate_member(c: Config, member: Mapping[str, float]) -> None:
  lr, wd = member["learning_rate"], member["weight_decay"]
  _check(lr > 0.0, f"learning_rate must be positive, not {lr}")
  _check(wd >= 0.0, f"weight_decay must be non-negative, not {wd}")
  noise = member["noise_rate"]
  _check(0.0 <= noise < 1.0, f"noise_rate must lie in [0, 1), not {noise}")
  beta = member["sparsity_weight"]
  _check(beta >= 0.0, f"sparsity_weight must be non-negative, not {beta}")
  # The KL penalty treats activations as probabilities of firing.
  _check(
    beta == 0.0 or c.activation == "sigmoid",
    f"sparsity_weight > 0 needs activation=sigmoid, not {c.activation}",
  )
  l2 = member["l2_weight"]
  _check(l2 >= 0.0, f"l2_weight must be non-negative, not {l2}")
  k = member["k"]
  code = c.hidden_sizes[autoencoder.code_index(c.hidden_sizes)]
  _check(
    float(k).is_integer() and 0 <= k <= code,
    f"k must be an integer in [0, {code}] (the code layer's width), not {k}",
  )
  _check(c.variant != "ksparse" or k >= 1, "ksparse needs k >= 1")
  if c.k_start > 0:
    _check(
      1 <= k <= c.k_start,
      f"a k schedule from k_start={c.k_start} needs 1 <= k <= k_start, "
      f"not k={k:g}",
    )


def members(config: Config) -> list[dict[str, float]]:
  """The members of a run: each swept setting crossed with each seed.

  Seeds run from ``config.seed`` to ``config.seed + seeds - 1`` within each
  setting, so member ``i`` has setting ``i // seeds`` and seed
  ``config.seed + i % seeds``.

  Args:
    config: the run's configuration (``sweep``, ``seeds``, ``seed``).

  Returns:
    One dict per member with its ``seed`` and every sweepable
    hyper-parameter, in the order: swept settings outer, seeds inner.
  """
  names = [name for name, _ in config.sweep]
  grids = [values for _, values in config.sweep]
  out = []
  for setting in itertools.product(*grids):
    for offset in range(config.seeds):
      member = {name: float(getattr(config, name)) for name in SWEEPABLE}
      member.update(zip(names, (float(v) for v in setting), strict=True))
      member["seed"] = config.seed + offset
      out.append(member)
  return out


def get_config(variant: str, **overrides: Any) -> Config:
  """The variant's defaults with ``overrides`` applied, validated.

  Args:
    variant: a name in ``VARIANTS``.
    **overrides: fields to change; the lists of ``hidden_sizes``,
      ``ranking_cutoffs`` and ``sweep`` become tuples.

  Returns:
    The validated ``Config``.

  Raises:
    ValueError: an unknown variant or field, or a bad value.
  """
  if variant not in VARIANTS:
    raise ValueError(
      f"unknown variant {variant!r}; known: {', '.join(VARIANTS)}"
    )
  fields = {f.name for f in dataclasses.fields(Config)}
  unknown = sorted(set(overrides) - fields)
  if unknown:
    raise ValueError(f"unknown config fields: {', '.join(unknown)}")
  for name in ("hidden_sizes", "ranking_cutoffs"):
    if name in overrides:
      overrides[name] = tuple(overrides[name])
  if "sweep" in overrides:
    overrides["sweep"] = tuple(
      (name, tuple(values)) for name, values in overrides["sweep"]
    )
  return validate(dataclasses.replace(VARIANTS[variant], **overrides))
