"""Per-round counters, synced timers, per-sample records, fidelity measures."""
