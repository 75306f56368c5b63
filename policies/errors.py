"""Errors a user can fix: bad configs and checkpoints that do not fit."""

from __future__ import annotations


class ConfigError(ValueError):
    """An invalid name or value in an algorithm's or sampler's configuration."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or that belongs to another algorithm, dataset shape or config."""


class CorruptCheckpoint(CheckpointError):
    """A checkpoint file that cannot be read back: truncated, overwritten, or not a torch file."""
