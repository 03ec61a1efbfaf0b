"""Hinton knowledge distillation: the student matches the teacher's softened outputs and the labels."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    temperature: float,
    alpha: float,
) -> torch.Tensor:
    """alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(student, labels).

    T^2 keeps the soft-target gradients on the same scale as the hard-label ones (Hinton et al. 2015);
    alpha is the weight of the soft term (the PyTorch tutorial uses 0.25 with T=2).
    """
    t = temperature
    soft = F.kl_div(
        F.log_softmax(student_logits.float() / t, dim=-1),
        F.log_softmax(teacher_logits.float() / t, dim=-1),
        log_target=True,
        reduction="batchmean",
    ) * (t * t)
    hard = F.cross_entropy(student_logits.float(), labels)
    return alpha * soft + (1.0 - alpha) * hard
