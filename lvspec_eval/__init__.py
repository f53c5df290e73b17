"""lvspec-eval: evaluating (loosely) speculative decoding of video LLMs inside lmms-eval.

Importing the package does no work and imports no torch."""

__version__ = "0.1.0"
