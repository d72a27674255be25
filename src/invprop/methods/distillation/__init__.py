"""Self-distillation without negatives: a predictor regresses a target network's (or stop-gradient) output."""

from invprop.methods.distillation import byol, dino, directpred, distill, ibot, ijepa, msn, simsiam

__all__ = ["byol", "dino", "directpred", "distill", "ibot", "ijepa", "msn", "simsiam"]
