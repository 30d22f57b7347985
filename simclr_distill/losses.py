"""Distillation losses: pure functions of logits, labels and scalars.

Binary tasks carry one logit per example (shape [B] or [B, 1]); multiclass tasks carry [B, K].
Per-example losses have shape [B]; `distillation_loss` combines the teacher term and the masked
ground-truth term into the scalar a train step minimises. Everything is written with
`keras.ops`, so the functions work on any Keras backend and inside `tf.function`. Teacher
logits are cast to the student's dtype, so a float64 teacher and a float32 student mix.
"""

from __future__ import annotations

from keras import ops

TASKS = ("binary", "multiclass")
LOSS_KINDS = ("hard", "soft_kl", "soft_xent")
_SOFT_KINDS = ("kl", "xent")


def _check_choice(what: str, value: object, allowed: tuple[str, ...]) -> None:
  if value not in allowed:
    raise ValueError(f"unknown {what} {value!r}; expected one of {', '.join(map(repr, allowed))}")


def _check_temperature(temperature: float) -> None:
  if not temperature > 0:  # Also rejects NaN.
    raise ValueError(f"temperature must be > 0, got {temperature!r}")


def _binary_logits(logits):
  """Flattens [B] or [B, 1] binary logits to [B].

  A [B] tensor next to a [B, 1] one would otherwise broadcast to [B, B] and yield a wrong but
  finite loss, so both shapes are normalised and anything wider is refused.
  """
  logits = ops.convert_to_tensor(logits)
  if len(logits.shape) > 2 or (len(logits.shape) == 2 and logits.shape[-1] != 1):
    raise ValueError(f"binary logits must have shape [B] or [B, 1], got {tuple(logits.shape)}")
  return ops.reshape(logits, (-1,))


def sigmoid_soft_target_loss(teacher_logits, student_logits, temperature: float = 1.0,
                             kind: str = "kl"):
  """Per-example loss between the teacher's and student's tempered sigmoid probabilities.

  With p_t = sigmoid(t / T) and p_s = sigmoid(s / T), "kl" is the binary KL(p_t || p_s) and
  "xent" the binary cross-entropy -(p_t log p_s + (1 - p_t) log(1 - p_s)). Both are scaled by
  T**2 so that gradient magnitudes do not shrink as T grows (Hinton et al., 2015).

  Args:
    teacher_logits: Teacher logits, shape [B] or [B, 1].
    student_logits: Student logits, same number of examples.
    temperature: A positive Python float.
    kind: "kl" or "xent".

  Returns:
    A [B] tensor; finite even for logits of magnitude 1e4, and for "kl" non-negative and exactly
    zero where teacher and student logits are equal.

  Raises:
    ValueError: for an unknown `kind`, a non-positive temperature or logits wider than [B, 1].
  """
  _check_choice("soft-target kind", kind, _SOFT_KINDS)
  _check_temperature(temperature)
  s = _binary_logits(student_logits)
  t = ops.cast(_binary_logits(teacher_logits), s.dtype) / temperature
  s = s / temperature
  # log(1 - sigmoid(x)) == log_sigmoid(-x); staying in log space keeps 0 * log(0) out of the sum.
  log_ps, log_1m_ps = ops.log_sigmoid(s), ops.log_sigmoid(-s)
  p_t, p_1m_t = ops.sigmoid(t), ops.sigmoid(-t)
  if kind == "kl":
    loss = (p_t * (ops.log_sigmoid(t) - log_ps) + p_1m_t * (ops.log_sigmoid(-t) - log_1m_ps))
    # KL >= 0 mathematically; rounding can leave a near-zero value a few ulps below zero.
    loss = ops.maximum(loss, 0.0)
  else:
    loss = -(p_t * log_ps + p_1m_t * log_1m_ps)
  return loss * temperature**2


def softmax_soft_target_loss(teacher_logits, student_logits, temperature: float = 1.0,
                             kind: str = "kl"):
  """Per-example loss between the teacher's and student's tempered softmax distributions.

  With p_t = softmax(t / T) and p_s = softmax(s / T), "kl" is KL(p_t || p_s) and "xent" the
  cross-entropy -sum_k p_t log p_s, both scaled by T**2 (Hinton et al., 2015).

  Args:
    teacher_logits: Teacher logits, shape [B, K].
    student_logits: Student logits, shape [B, K].
    temperature: A positive Python float.
    kind: "kl" or "xent".

  Returns:
    A [B] tensor; finite for extreme logits, and for "kl" non-negative and exactly zero where the
    two rows of logits are equal.

  Raises:
    ValueError: for an unknown `kind` or a non-positive temperature.
  """
  _check_choice("soft-target kind", kind, _SOFT_KINDS)
  _check_temperature(temperature)
  s = ops.convert_to_tensor(student_logits)
  t = ops.cast(teacher_logits, s.dtype) / temperature
  s = s / temperature
  log_pt, log_ps = ops.log_softmax(t, axis=-1), ops.log_softmax(s, axis=-1)
  p_t = ops.softmax(t, axis=-1)
  if kind == "kl":
    loss = ops.maximum(ops.sum(p_t * (log_pt - log_ps), axis=-1), 0.0)  # Rounding, as above.
  else:
    loss = -ops.sum(p_t * log_ps, axis=-1)
  return loss * temperature**2


def soft_target_loss(teacher_logits, student_logits, *, task: str, temperature: float = 1.0,
                     kind: str = "kl"):
  """Per-example soft-target loss for `task`: sigmoid for "binary", softmax for "multiclass".

  Args:
    teacher_logits: Teacher logits ([B] or [B, 1] for binary, [B, K] for multiclass).
    student_logits: Student logits of the same shape.
    task: One of `TASKS`.
    temperature: A positive Python float.
    kind: "kl" or "xent".

  Returns:
    A [B] tensor.

  Raises:
    ValueError: for an unknown task or kind, or a non-positive temperature.
  """
  _check_choice("task", task, TASKS)
  loss_fn = sigmoid_soft_target_loss if task == "binary" else softmax_soft_target_loss
  return loss_fn(teacher_logits, student_logits, temperature=temperature, kind=kind)


def hard_pseudo_labels(teacher_logits, *, task: str):
  """The SimCLR-S2 study's pseudo-labels: the teacher's probabilities rounded.

  Args:
    teacher_logits: Teacher logits ([B] or [B, 1] for binary, [B, K] for multiclass).
    task: One of `TASKS`.

  Returns:
    Binary: float32 [B], 1.0 where the logit is > 0. A logit of exactly 0 (probability 0.5) maps
    to 0, as round-half-to-even does. Multiclass: int32 [B], the argmax.

  Raises:
    ValueError: for an unknown task.
  """
  _check_choice("task", task, TASKS)
  if task == "binary":
    return ops.cast(_binary_logits(teacher_logits) > 0, "float32")
  return ops.cast(ops.argmax(teacher_logits, axis=-1), "int32")


def supervised_loss(labels, student_logits, *, task: str):
  """Per-example cross-entropy of the student's logits against integer-valued labels.

  Args:
    labels: Binary: 0/1 values, shape [B] or [B, 1]. Multiclass: class indices, shape [B].
    student_logits: Student logits ([B] or [B, 1] for binary, [B, K] for multiclass).
    task: One of `TASKS`.

  Returns:
    A [B] tensor: binary cross-entropy or sparse categorical cross-entropy, both from logits.

  Raises:
    ValueError: for an unknown task.
  """
  _check_choice("task", task, TASKS)
  if task == "binary":
    logits = _binary_logits(student_logits)
    labels = ops.cast(ops.reshape(labels, (-1,)), logits.dtype)
    return ops.binary_crossentropy(labels, logits, from_logits=True)
  return ops.sparse_categorical_crossentropy(labels, student_logits, from_logits=True)


def hard_label_loss(teacher_logits, student_logits, *, task: str):
  """Per-example cross-entropy of the student against the teacher's hard pseudo-labels.

  Args:
    teacher_logits: Teacher logits; no gradient flows into them.
    student_logits: Student logits of the same shape.
    task: One of `TASKS`.

  Returns:
    A [B] tensor.

  Raises:
    ValueError: for an unknown task.
  """
  labels = hard_pseudo_labels(ops.stop_gradient(teacher_logits), task=task)
  return supervised_loss(labels, student_logits, task=task)


def distillation_loss_terms(teacher_logits, student_logits, labels, label_mask, *, task: str,
                            kind: str, temperature: float = 1.0):
  """The two scalar terms of the distillation objective.

  Args:
    teacher_logits: Teacher logits ([B] or [B, 1] for binary, [B, K] for multiclass); no
      gradient flows into them.
    student_logits: Student logits of the same shape.
    labels: Ground-truth labels, shaped as `supervised_loss` expects. Entries whose mask is 0
      may hold anything (e.g. -1); they never reach the loss.
    label_mask: [B] (or [B, 1]) 1 for labelled examples, 0 for unlabelled ones.
    task: One of `TASKS`.
    kind: One of `LOSS_KINDS`.
    temperature: A positive Python float; only the soft kinds use it.

  Returns:
    (distill_term, supervised_term): the batch mean of the per-example teacher loss, and the
    mean supervised loss over labelled examples (0 when the batch has none).

  Raises:
    ValueError: for an unknown task or kind, or a non-positive temperature.
  """
  _check_choice("task", task, TASKS)
  _check_choice("loss kind", kind, LOSS_KINDS)
  _check_temperature(temperature)
  teacher_logits = ops.stop_gradient(ops.convert_to_tensor(teacher_logits))
  student_logits = ops.convert_to_tensor(student_logits)
  if kind == "hard":
    per_example = hard_label_loss(teacher_logits, student_logits, task=task)
  else:
    per_example = soft_target_loss(teacher_logits, student_logits, task=task,
                                   temperature=temperature, kind=kind.removeprefix("soft_"))
  distill_term = ops.mean(per_example)
  return distill_term, masked_supervised_loss(labels, student_logits, label_mask, task=task)


def masked_supervised_loss(labels, student_logits, label_mask, *, task: str):
  """Mean `supervised_loss` over the examples whose mask is 1 (0 when there are none).

  Args:
    labels: Ground-truth labels, shaped as `supervised_loss` expects. Entries whose mask is 0
      may hold anything (e.g. -1); they never reach the loss.
    student_logits: Student logits.
    label_mask: [B] (or [B, 1]) 1 for labelled examples, 0 for unlabelled ones.
    task: One of `TASKS`.

  Returns:
    A scalar tensor.
  """
  _check_choice("task", task, TASKS)
  student_logits = ops.convert_to_tensor(student_logits)
  mask = ops.cast(ops.reshape(label_mask, (-1,)), student_logits.dtype)
  labels = ops.reshape(ops.convert_to_tensor(labels), (-1,))
  # A 0 weight does not stop NaN (0 * NaN = NaN), and an out-of-range class index can make the
  # cross-entropy itself fail, so unlabelled entries are made valid before the loss sees them.
  labels = ops.where(mask > 0, labels, ops.zeros_like(labels))
  supervised = supervised_loss(labels, student_logits, task=task)
  return ops.sum(mask * supervised) / ops.maximum(ops.sum(mask), 1.0)


def distillation_loss(teacher_logits, student_logits, labels, label_mask, *, task: str,
                      kind: str, temperature: float = 1.0, alpha: float = 0.0):
  """The distillation objective: alpha * supervised_term + (1 - alpha) * distill_term.

  `alpha` weighs the ground-truth term, as `student_loss_weight` does in
  `keras.distillation.Distiller`; alpha = 0 is pure distillation.

  Args:
    teacher_logits: Teacher logits; no gradient flows into them.
    student_logits: Student logits of the same shape.
    labels: Ground-truth labels; see `distillation_loss_terms`.
    label_mask: 1 for labelled examples, 0 for unlabelled ones.
    task: One of `TASKS`.
    kind: One of `LOSS_KINDS`.
    temperature: A positive Python float; only the soft kinds use it.
    alpha: Weight of the supervised term, in [0, 1].

  Returns:
    A scalar tensor.

  Raises:
    ValueError: for alpha outside [0, 1], a non-positive temperature, or an unknown task or
      kind.
  """
  if not 0.0 <= alpha <= 1.0:  # Also rejects NaN.
    raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
  distill_term, supervised_term = distillation_loss_terms(
      teacher_logits, student_logits, labels, label_mask, task=task, kind=kind,
      temperature=temperature)
  return alpha * supervised_term + (1.0 - alpha) * distill_term
