"""Pure ML stages (embeddings, profiles, candidates, features, ranker, evaluation, export, drift).

Nothing here imports Dagster; modules import heavy libraries (torch, lightgbm) only where used,
so serving can import `ml.features` and `ml.candidates` without them.
"""
