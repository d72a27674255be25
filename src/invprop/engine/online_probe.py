"""The online linear probe: a linear classifier trained on the labels during pretraining, on detached backbone
features of each batch's first view, as solo-learn's and lightly's online linear evaluation -- the health of a run
while it trains, where labels exist (``eval.online_probe``).

It never changes what the method trains: its features come from a pass without gradients in eval mode (BatchNorm's
statistics untouched, no dropout, no random draws), so a run with the probe ends with the same weights as one without
(tested bitwise).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from invprop.models import Encoder

#: The probe's SGD momentum (our choice, as the linear protocol's).
MOMENTUM = 0.9
#: Labels below zero (images without one) are left out of the probe's loss and accuracy.
NO_LABEL = -1


class OnlineProbe(nn.Module):
    """A linear head on the backbone's features with its own SGD optimiser (constant ``lr``, no weight decay).

    Its running sums (loss, correct, count over the epoch's labelled images) are buffers, so a checkpoint inside an
    epoch resumes them exactly; :meth:`epoch_scores` reads and resets them.
    """

    loss_sum: Tensor
    correct: Tensor
    count: Tensor

    def __init__(self, feature_dim: int, num_classes: int, lr: float) -> None:
        super().__init__()
        self.linear = nn.Linear(feature_dim, num_classes)
        self.optimizer = torch.optim.SGD(self.linear.parameters(), lr=lr, momentum=MOMENTUM)
        self.register_buffer("loss_sum", torch.zeros((), dtype=torch.float64))
        self.register_buffer("correct", torch.zeros((), dtype=torch.int64))
        self.register_buffer("count", torch.zeros((), dtype=torch.int64))

    @staticmethod
    @torch.no_grad()
    def features(encoder: Encoder, images: Tensor) -> Tensor:
        """(B, F) backbone features of ``images`` in eval mode, every module's own mode restored after."""
        modes = {module: module.training for module in encoder.modules()}
        encoder.eval()
        try:
            return encoder.features(images)
        finally:
            for module, training in modes.items():
                module.training = training

    def step(self, features: Tensor, labels: Tensor) -> None:
        """One SGD step of the probe on detached ``features`` (B, F) with ``labels`` (B,) (``NO_LABEL`` left out),
        in float32."""
        known = labels != NO_LABEL
        logits = self.linear(features.detach().float())
        losses = F.cross_entropy(logits, labels.clamp(min=0), reduction="none") * known
        loss = losses.sum() / known.sum().clamp(min=1)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.loss_sum += losses.detach().sum().double()
        self.correct += ((logits.detach().argmax(1) == labels) & known).sum()
        self.count += known.sum()

    def epoch_scores(self) -> dict[str, float]:
        """``online_probe_loss`` and ``online_probe_train_top1`` over the epoch's steps (augmented views); resets."""
        count = int(self.count)
        scores = (
            {"online_probe_loss": float(self.loss_sum) / count, "online_probe_train_top1": int(self.correct) / count}
            if count
            else {}
        )
        self.loss_sum.zero_()
        self.correct.zero_()
        self.count.zero_()
        return scores

    @torch.no_grad()
    def top1(self, features: Tensor, labels: Tensor) -> float:
        """Top-1 accuracy on held-out ``features`` (N, F) with ``labels`` (N,)."""
        predicted = self.linear(features.float().to(self.linear.weight.device)).argmax(1).cpu()
        return int((predicted == labels.cpu()).sum()) / max(len(labels), 1)

    def full_state(self) -> dict[str, Any]:
        """The weights, running sums and optimiser state, for the checkpoint."""
        return {"module": self.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_full_state(self, state: dict[str, Any]) -> None:
        self.load_state_dict(state["module"])
        self.optimizer.load_state_dict(state["optimizer"])
