"""ONNX export of the embedding model (image in, embedding out) and an onnxruntime check.

The exported graph is the meta-architecture's eval forward: normalised images (B, 3, H, W)
float32 in, the (B, D) embedding out (un-normalised, as evaluation receives it), with a dynamic
batch dimension; H x W is fixed to the export size (``INPUT.SIZE_TEST``). Models with SIE
(camera / view embeddings) take ``camids`` / ``viewids`` (B,) int64 inputs as well. Preprocessing (resize to ``INPUT.SIZE_TEST``, scale to [0, 1],
``(x - PIXEL_MEAN) / PIXEL_STD``) stays outside the graph, like in evaluation.

Uses the TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``), which needs the
``onnx`` package to write the file; the check also needs ``onnxruntime`` (both: the ``[onnx]``
extra; :func:`require_onnx` says which is missing before any work).
"""

import logging
import warnings
from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn

from clipreid_plugin.evaluation.evaluator import flip_images
from clipreid_plugin.utils.checkpoint import unwrap_model
from clipreid_plugin.utils.file_io import atomic_write
from clipreid_plugin.utils.optional import import_optional

__all__ = ["EmbeddingModel", "export_onnx", "check_onnx", "require_onnx", "DEFAULT_OPSET"]

logger = logging.getLogger(__name__)

# 17: LayerNormalization as one op, supported by every onnxruntime of the last years
DEFAULT_OPSET = 17


class EmbeddingModel(nn.Module):
    """Tensor-in, tensor-out view of a meta-architecture's eval forward (what gets exported).

    Args:
        model: a meta-architecture (``forward(batch) -> (B, D)`` in eval mode).
        flip: return the mean of the embeddings of the images and of their mirror images
            (TEST.FLIP.ENABLED), as evaluation does.
    """

    def __init__(self, model: nn.Module, flip: bool = False):
        super().__init__()
        self.model = unwrap_model(model)
        self.flip = bool(flip)
        backbone = getattr(self.model, "backbone", None)
        # the meta-architectures pass ids on only to a backbone with SIE
        self.uses_camids = bool(getattr(backbone, "uses_camids", False))
        self.uses_viewids = bool(getattr(backbone, "uses_viewids", False))

    @property
    def input_names(self) -> List[str]:
        """Returns: the graph's input names, in argument order."""
        return ["images"] + (["camids"] if self.uses_camids else []) + (["viewids"] if self.uses_viewids else [])

    def forward(self, images: torch.Tensor, camids: Optional[torch.Tensor] = None,
                viewids: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Args: images (B, 3, H, W) normalised; camids / viewids (B,) int64 for SIE models.

        Returns:
            (B, D) embedding.
        """
        batch = {"images": images}
        if camids is not None:
            batch["camids"] = camids
        if viewids is not None:
            batch["viewids"] = viewids
        out = self.model(batch)
        if self.flip:
            out = (out + self.model(dict(batch, images=flip_images(images)))) / 2.0
        return out

    def example_inputs(self, image_size: Sequence[int], batch_size: int = 2) -> Tuple[torch.Tensor, ...]:
        """Returns: random inputs of the graph's signature on the model's device."""
        device = next(self.model.parameters()).device
        gen = torch.Generator().manual_seed(0)
        args = [torch.randn(batch_size, 3, int(image_size[0]), int(image_size[1]), generator=gen).to(device)]
        if self.uses_camids:
            args.append(torch.zeros(batch_size, dtype=torch.int64, device=device))
        if self.uses_viewids:
            args.append(torch.zeros(batch_size, dtype=torch.int64, device=device))
        return tuple(args)


def export_onnx(model: nn.Module, path: str, image_size: Sequence[int], opset: int = DEFAULT_OPSET,
                flip: bool = False, dynamic_batch: bool = True) -> EmbeddingModel:
    """Export ``model``'s embedding forward to an ONNX file.

    Args:
        model: a meta-architecture (set to eval mode here).
        path: the ``.onnx`` file to write (its folder is created).
        image_size: (height, width) of the input, ``INPUT.SIZE_TEST``.
        opset: ONNX opset version.
        flip: include flip averaging in the graph (TEST.FLIP.ENABLED).
        dynamic_batch: leave the batch dimension free (otherwise fixed to 2).

    Returns:
        The :class:`EmbeddingModel` that was exported (for :func:`check_onnx`).
    """
    require_onnx(check=False)
    wrapper = EmbeddingModel(model, flip=flip).eval()
    args = wrapper.example_inputs(image_size)
    names = wrapper.input_names
    dynamic_axes = {n: {0: "batch"} for n in names + ["embedding"]} if dynamic_batch else None
    # nn.MultiheadAttention's inference fast path (aten::_native_multi_head_attention, taken in
    # eval mode without grad) has no ONNX symbolic: trace the ordinary composite path instead.
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # the TorchScript exporter announces its own deprecation on every call; it is what
            # works without onnxscript, so the warning is noise for users of this tool
            warnings.simplefilter("ignore", DeprecationWarning)
            # shape / id-range checks in the model's forward become constants of the trace: the
            # graph is built for ``image_size`` only, as documented, so these are expected
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            atomic_write(path, lambda f: torch.onnx.export(
                wrapper, args, f, input_names=names, output_names=["embedding"], dynamic_axes=dynamic_axes,
                opset_version=int(opset), dynamo=False))
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    logger.info(f"Exported {type(wrapper.model).__name__} to {path} (opset {opset}, inputs {names}).")
    return wrapper


def require_onnx(check: bool = True) -> None:
    """Fail at once, with one line naming the ``[onnx]`` extra, when a package the export needs is
    missing: ``onnx`` (torch's exporter writes the file with it) and, for the check, ``onnxruntime``.

    Args:
        check: whether the onnxruntime check will run too.

    Raises:
        MissingDependencyError: the package is not installed.
    """
    import_optional("onnx", "Exporting to ONNX", "onnx", "onnx onnxruntime",
                    note="(torch's exporter writes the file with it, also with --no-check)")
    if check:
        _onnxruntime()


def _onnxruntime():
    return import_optional("onnxruntime", "Checking an ONNX export", "onnx", "onnx onnxruntime",
                           note="(--no-check exports without the check)")


def check_onnx(path: str, wrapper: EmbeddingModel, image_size: Sequence[int], batch_size: int = 3) -> float:
    """Run the ONNX file with onnxruntime (CPU) and PyTorch on the same random inputs.

    A batch size different from the one used at export time also checks the dynamic batch axis.

    Args:
        path: the exported file.
        wrapper: what :func:`export_onnx` returned.
        image_size: (height, width).
        batch_size: images in the check batch.

    Returns:
        The largest absolute difference between the two embeddings.
    """
    ort = _onnxruntime()
    args = wrapper.example_inputs(image_size, batch_size)
    with torch.no_grad():
        expected = wrapper.eval()(*args).float().cpu()
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    feeds = {n: a.cpu().numpy() for n, a in zip(wrapper.input_names, args)}
    got = torch.from_numpy(session.run(["embedding"], feeds)[0])
    if got.shape != expected.shape:
        raise RuntimeError(f"ONNX output shape {tuple(got.shape)} differs from PyTorch's {tuple(expected.shape)}.")
    return float((got - expected).abs().max())
