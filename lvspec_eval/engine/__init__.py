"""The decoding engine (never imports lmms-eval, never branches on model family)."""

from lvspec_eval.engine.loop import DecodeResult, decode
from lvspec_eval.engine.methods import Method, build_method
from lvspec_eval.engine.processors import GenerationConfigError, GreedyProcessing, greedy_processing
from lvspec_eval.engine.stopping import StopCondition

__all__ = ["DecodeResult", "GenerationConfigError", "GreedyProcessing", "Method", "StopCondition", "build_method",
           "decode", "greedy_processing"]
