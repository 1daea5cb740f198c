"""A tabular MLP in PyTorch: embeddings for categoricals, normalized numerics.

Wrapped as a scikit-learn estimator (``fit`` / ``predict_proba``), so it is logged,
gated, registered, exported and benchmarked exactly like the scikit-learn trainers.
Deterministic for a seed on the CPU; trains on the GPU when one is present. Early stopping
watches the holdout's log loss and keeps the best weights.

Export: the module is exported with ``torch.onnx.export`` (TorchScript exporter, dynamic
batch axis) and the category lookup is grafted in front of it as ``ai.onnx.ml``
``LabelEncoder`` nodes, so the ONNX graph takes the raw columns like the scikit-learn ones.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sklearn.base import BaseEstimator, ClassifierMixin

if TYPE_CHECKING:
    import numpy as np
    import onnx
    import pandas as pd


def _module(cards: list[int], n_num: int, hidden: list[int], embedding_dim: int, mean: Any, std: Any) -> Any:
    import torch
    from torch import nn

    class TabularMLP(nn.Module):
        mean: torch.Tensor  # buffers (register_buffer below)
        std: torch.Tensor

        def __init__(self) -> None:
            super().__init__()
            embeddings = [nn.Embedding(card, min(embedding_dim, max(2, round(1.6 * card ** 0.56))))
                          for card in cards]
            self.embeddings = nn.ModuleList(embeddings)
            self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
            self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32))
            width = sum(e.embedding_dim for e in embeddings) + n_num
            layers: list[nn.Module] = []
            for units in hidden:
                layers += [nn.Linear(width, units), nn.ReLU()]
                width = units
            layers.append(nn.Linear(width, 1))
            self.mlp = nn.Sequential(*layers)

        def forward(self, cat_idx: torch.Tensor, num: torch.Tensor) -> torch.Tensor:
            parts = [emb(cat_idx[:, i]) for i, emb in enumerate(self.embeddings)]
            parts.append(torch.nan_to_num((num - self.mean) / self.std, nan=0.0))
            p = torch.sigmoid(self.mlp(torch.cat(parts, dim=1)))[:, 0]
            return torch.stack([1 - p, p], dim=1)

    return TabularMLP()


class TorchTabularClassifier(ClassifierMixin, BaseEstimator):  # type: ignore[misc]  # sklearn ships no type hints
    """Binary classifier: an MLP over embedded categoricals and standardized numerics."""

    uses_validation = True

    def __init__(self, categorical: tuple[str, ...] = (), numeric: tuple[str, ...] = (), hidden: str = "64,32",
                 embedding_dim: int = 8, lr: float = 2e-3, batch_size: int = 512, max_epochs: int = 40,
                 patience: int = 4, weight_decay: float = 1e-5, seed: int = 42, device: str = "auto") -> None:
        self.categorical = categorical
        self.numeric = numeric
        self.hidden = hidden
        self.embedding_dim = embedding_dim
        self.lr = lr
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.patience = patience
        self.weight_decay = weight_decay
        self.seed = seed
        self.device = device

    # -- data ---------------------------------------------------------------------------
    def _tensors(self, x: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        import numpy as np
        import pandas as pd

        cats = np.zeros((len(x), len(self.categorical)), dtype=np.int64)
        for i, column in enumerate(self.categorical):
            cats[:, i] = pd.Categorical(x[column].astype(str), categories=self.vocab_[column]).codes + 1  # 0: unseen
        nums = x[list(self.numeric)].to_numpy(dtype=np.float32, na_value=np.nan) if self.numeric else \
            np.zeros((len(x), 0), np.float32)
        return cats, nums

    def fit(self, x: pd.DataFrame, y: Any, X_val: pd.DataFrame | None = None,  # noqa: N803
            y_val: Any = None) -> TorchTabularClassifier:
        import numpy as np
        import torch

        torch.manual_seed(self.seed)
        torch.use_deterministic_algorithms(True, warn_only=True)
        generator = torch.Generator().manual_seed(self.seed)
        device = torch.device("cuda" if self.device == "auto" and torch.cuda.is_available() else
                              ("cpu" if self.device == "auto" else self.device))
        self.vocab_ = {c: sorted(x[c].astype(str).unique().tolist()) for c in self.categorical}
        nums = x[list(self.numeric)].to_numpy(dtype=np.float32, na_value=np.nan)
        mean = np.nan_to_num(np.nanmean(nums, axis=0)) if self.numeric else np.zeros(0, np.float32)
        std = np.nan_to_num(np.nanstd(nums, axis=0), nan=1.0) if self.numeric else np.zeros(0, np.float32)
        std[std == 0] = 1.0
        hidden = [int(h) for h in str(self.hidden).split(",") if h.strip()]
        module = _module([len(self.vocab_[c]) + 1 for c in self.categorical], len(self.numeric), hidden,
                         self.embedding_dim, mean, std).to(device)
        cats, nums = (torch.as_tensor(a) for a in self._tensors(x))
        target = torch.as_tensor(np.asarray(y), dtype=torch.float32)
        val = None
        if X_val is not None:
            vc, vn = (torch.as_tensor(a).to(device) for a in self._tensors(X_val))
            val = (vc, vn, torch.as_tensor(np.asarray(y_val), dtype=torch.float32).to(device))
        optimizer = torch.optim.AdamW(module.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        best, best_state, stale, self.history_ = float("inf"), None, 0, []
        for _epoch in range(self.max_epochs):
            module.train()
            order = torch.randperm(len(target), generator=generator)
            for start in range(0, len(order), self.batch_size):
                idx = order[start:start + self.batch_size]
                proba = module(cats[idx].to(device), nums[idx].to(device))[:, 1].clamp(1e-7, 1 - 1e-7)
                loss = torch.nn.functional.binary_cross_entropy(proba, target[idx].to(device))
                optimizer.zero_grad()
                torch.autograd.backward(loss)  # what loss.backward() calls (that method is unannotated)
                optimizer.step()
            if val is None:
                continue
            module.eval()
            with torch.no_grad():
                p = module(val[0], val[1])[:, 1].clamp(1e-7, 1 - 1e-7)
                val_loss = float(torch.nn.functional.binary_cross_entropy(p, val[2]))
            self.history_.append(val_loss)
            if val_loss < best - 1e-5:
                best, stale = val_loss, 0
                best_state = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
            else:
                stale += 1
                if stale >= self.patience:
                    break
        module = module.cpu()
        if best_state is not None:
            module.load_state_dict(best_state)
        module.eval()
        self.module_ = module
        self.classes_ = np.array([0, 1])
        self.epochs_ = len(self.history_) or self.max_epochs
        return self

    def predict_proba(self, x: pd.DataFrame) -> np.ndarray:
        import numpy as np
        import torch

        cats, nums = self._tensors(x)
        with torch.no_grad():
            proba: np.ndarray = self.module_(torch.as_tensor(cats), torch.as_tensor(nums)).numpy().astype(np.float64)
        return proba

    # -- export -------------------------------------------------------------------------
    def to_onnx(self, opset: int) -> onnx.ModelProto:
        """One graph: per-column inputs -> LabelEncoder/Concat -> the MLP -> ``probabilities``."""
        import io

        import onnx
        import torch
        from onnx import TensorProto, helper

        buffer = io.BytesIO()
        sample = (torch.zeros(2, len(self.categorical), dtype=torch.long), torch.zeros(2, len(self.numeric)))
        # torch's annotation names paths only; the TorchScript exporter (dynamo=False) also writes to a file object
        torch.onnx.export(self.module_, sample, buffer, dynamo=False, opset_version=opset,  # type: ignore[arg-type]
                          input_names=["cat_idx", "num"], output_names=["probabilities"],
                          dynamic_axes={"cat_idx": {0: "n"}, "num": {0: "n"}, "probabilities": {0: "n"}})
        model = onnx.load_from_string(buffer.getvalue())
        graph = model.graph
        used = {name for node in graph.node for name in node.input}
        kept = [i for i in graph.input if i.name not in ("cat_idx", "num")]
        del graph.input[:]
        front, inputs = [], []
        for column in self.categorical:
            inputs.append(helper.make_tensor_value_info(column, TensorProto.STRING, ["n", 1]))
            front.append(helper.make_node("LabelEncoder", [column], [f"{column}__idx"], domain="ai.onnx.ml",
                                          keys_strings=self.vocab_[column],
                                          values_int64s=list(range(1, len(self.vocab_[column]) + 1)),
                                          default_int64=0))
        for column in self.numeric:
            inputs.append(helper.make_tensor_value_info(column, TensorProto.FLOAT, ["n", 1]))
        if "cat_idx" in used:
            front.append(helper.make_node("Concat", [f"{c}__idx" for c in self.categorical], ["cat_idx"], axis=1))
        if "num" in used:
            front.append(helper.make_node("Concat", list(self.numeric), ["num"], axis=1))
        graph.input.extend(inputs + kept)
        nodes = front + list(graph.node)
        del graph.node[:]
        graph.node.extend(nodes)
        if not any(o.domain == "ai.onnx.ml" for o in model.opset_import):
            model.opset_import.append(helper.make_opsetid("ai.onnx.ml", 3))
        onnx.checker.check_model(model)
        return model

    @property
    def categories_(self) -> dict[str, list[str]]:
        return dict(self.vocab_)
