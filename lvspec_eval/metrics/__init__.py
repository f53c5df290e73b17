"""Per-sample records and what is computed from them (no torch import except in timing):

  schema     the record, defined once: every field, its JSON kind, a one-line meaning
  records    the writer: fields of a decode, of its paired ar decode, of the request
  jsonl      JSON Lines files: whole-line appends under a lock, the one reader policy, tail repair
  aggregate  run-level statistics under the glossary's names, bootstrap intervals
  timing     device-synchronised wall-clock timers
"""
