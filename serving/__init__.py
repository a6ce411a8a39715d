"""HTTP serving over the promoted model version: onnxruntime + numpy only (no torch, LightGBM or Dagster)."""
