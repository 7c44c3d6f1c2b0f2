"""The ensemble members and their fusion: arrays in, findings out. Knows nothing about DICOM."""

from ensembles.types import Box, Detection, MemberOutput

__all__ = ["Box", "Detection", "MemberOutput"]
