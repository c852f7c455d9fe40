"""Channels-last memory format for the model and its images; the method card is README.md
beside this file."""

from loom.algorithms.channels_last.channels_last import ChannelsLast

__all__ = ["ChannelsLast"]
