"""Text-to-video: any diffusers video pipeline behind one small backend.

Public surface: `T2VBackend` (load, validate, generate), `MemoryOptions`,
`ResolvedVideoParams`, the error classes, the tiny-pipeline builder and where the trained
pipeline ships.
"""

from model.t2v.backend import MemoryOptions, T2VBackend
from model.t2v.errors import InvalidVideoParams, T2VConfigError, T2VError, T2VModelNotFound
from model.t2v.params import ResolvedVideoParams
from model.t2v.shipped import SHIPPED_T2V_PIPELINE
from model.t2v.tiny import build_tiny_t2v_pipeline, ensure_tiny_t2v_pipeline

__all__ = [
    "SHIPPED_T2V_PIPELINE",
    "InvalidVideoParams",
    "MemoryOptions",
    "ResolvedVideoParams",
    "T2VBackend",
    "T2VConfigError",
    "T2VError",
    "T2VModelNotFound",
    "build_tiny_t2v_pipeline",
    "ensure_tiny_t2v_pipeline",
]
