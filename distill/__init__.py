"""On student-teacher deviations in distillation (Nagarajan et al., arXiv 2301.12923).

    from distill import distillation_loss, Teacher, analyse, distil_linear
    losses = distillation_loss(student_logits, labels, teacher_logits, alpha=0.5, tau=2.0)  # (B,)
    dev = analyse(p_teacher, p_student, labels)      # binned p_S - p_T, log-odds slope, agreement
"""

from distill import deviations
from distill import eigenspace
from distill import training
from distill.deviations import Deviations
from distill.deviations import analyse
from distill.eigenspace import EigenView
from distill.eigenspace import distil_linear
from distill.eigenspace import make_problem
from distill.loss import DistillError
from distill.loss import cross_entropy
from distill.loss import distillation_loss
from distill.loss import late_alpha
from distill.loss import soft_cross_entropy
from distill.loss import tempered_probs
from distill.teacher import Teacher
from distill.training import augment_fn
from distill.training import make_loss_fn
from distill.training import TrainedModel
from distill.training import train_model
