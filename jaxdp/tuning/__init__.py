"""Private hyperparameter tuning: search strategies that count their cost.

Every trial trains on the private data, so tuning spends privacy too. The
total (ε, δ) reported includes it: `random` search with a random number of
trials is accounted with Papernot & Steinke 2022's repeat-and-select bound,
`grid` and `qiea` (adaptive) by composition of their trials.
"""
