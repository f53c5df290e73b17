"""The offline testbed: synthetic clips, their answer grammar and tasks, the trained tiny target/drafter
pairs and their training recipe, the demo, the settings sweep and the regression baseline; `fixtures`
holds the tiny random-weight checkpoints, clips and CLI helpers of the tests and benchmarks.

Not part of the installed package (`lvspec_eval`): it lives in the checkout and its commands run
from the repository root (`python -m testbed.demo`); see the README's design note."""
