"""Reconstruction methods: hide or damage part of an image and learn to restore it -- denoising autoencoders,
context encoders (with their adversary), split-brain autoencoders' cross-channel prediction, and spotting the
artifacts of a repaired autoencoder code -- and masked autoencoders, which restore hidden patches of a ViT's input."""

from invprop.methods.reconstruction import context_encoder, denoising_ae, mae, split_brain, spot_artifacts

__all__ = ["context_encoder", "denoising_ae", "mae", "split_brain", "spot_artifacts"]
