"""Reconstruction methods: hide or damage part of an image and learn to restore it -- denoising autoencoders,
context encoders (with their adversary), and split-brain autoencoders' cross-channel prediction."""

from invprop.methods.reconstruction import context_encoder, denoising_ae, split_brain

__all__ = ["context_encoder", "denoising_ae", "split_brain"]
