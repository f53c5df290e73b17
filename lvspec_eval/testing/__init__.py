"""Test fixtures: tiny random Qwen2.5-VL checkpoints, the offline Qwen tokenizer and synthetic clips."""
