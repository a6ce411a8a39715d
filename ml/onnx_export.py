"""LightGBM ranker -> ONNX, and the parity check that guards it.

Route (works with LightGBM 4.7 / onnxmltools 1.16): convert the ranker's *booster* with
`onnxmltools.convert_lightgbm` at target opset 15 (opset 17 raises in the converter). The graph
takes `input` float32 (batch, n_features) and returns `variable` (batch, 1) scores.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

INPUT_NAME = "input"


def export_ranker(model, n_features: int, path: str | Path, target_opset: int = 15) -> Path:
    import onnxmltools
    from onnxmltools.convert.common.data_types import FloatTensorType

    booster = model.booster_ if hasattr(model, "booster_") else model
    onx = onnxmltools.convert_lightgbm(booster, initial_types=[(INPUT_NAME, FloatTensorType([None, n_features]))],
                                       target_opset=target_opset, zipmap=False)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".onnx.tmp")
    tmp.write_bytes(onx.SerializeToString())
    tmp.replace(path)
    return path


class OnnxScorer:
    """onnxruntime session over an exported ranker; providers chosen, then the ones obtained recorded."""

    def __init__(self, path: str | Path, providers: list[str] | None = None, threads: int = 1):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        available = ort.get_available_providers()
        wanted = providers or ["CUDAExecutionProvider", "CPUExecutionProvider"]
        self.session = ort.InferenceSession(str(path), sess_options=opts,
                                            providers=[p for p in wanted if p in available] or ["CPUExecutionProvider"])
        self.providers = self.session.get_providers()
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name
        out_shape = self.session.get_outputs()[0].shape
        self._bind_output = self.providers == ["CPUExecutionProvider"] and len(out_shape) == 2 and out_shape[1] == 1
        self._local = threading.local()

    def __call__(self, X: np.ndarray) -> np.ndarray:
        if len(X) == 0:
            return np.zeros(0, dtype=np.float64)
        X = np.ascontiguousarray(X, dtype=np.float32)
        if not self._bind_output:
            out = self.session.run([self.output_name], {self.input_name: X})[0]
            return np.asarray(out, dtype=np.float64).reshape(-1)
        # On CPU: the scores are written straight into a per-thread buffer bound by pointer, which saves
        # onnxruntime's output allocation and copy (~20% of a 500-row call). The binding is not
        # thread-safe, hence one per thread.
        local = self._local
        if getattr(local, "binding", None) is None:
            local.binding = self.session.io_binding()
            local.buffer = np.empty(0, dtype=np.float32)
        n = len(X)
        if len(local.buffer) < n:
            local.buffer = np.empty(max(n, 2 * len(local.buffer)), dtype=np.float32)
        out = local.buffer[:n]
        local.binding.bind_cpu_input(self.input_name, X)
        local.binding.bind_output(self.output_name, "cpu", 0, np.float32, [n, 1], out.ctypes.data)
        self.session.run_with_iobinding(local.binding)
        return out.astype(np.float64)  # a copy: the buffer is reused by the next call


def parity(model, onnx_path: str | Path, X: np.ndarray) -> float:
    """max |onnx - lightgbm| over the rows of X."""
    from ml.ranker import booster_scorer

    if len(X) == 0:
        raise ValueError("parity needs at least one feature row")
    native = booster_scorer(model)(X)
    onnx = OnnxScorer(onnx_path, providers=["CPUExecutionProvider"])(X)
    return float(np.max(np.abs(native - onnx)))
