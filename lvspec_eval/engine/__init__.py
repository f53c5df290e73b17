"""The decoding engine (never imports lmms-eval, never branches on model family)."""

from lvspec_eval.engine.loop import DecodeResult, decode

__all__ = ["DecodeResult", "decode"]
