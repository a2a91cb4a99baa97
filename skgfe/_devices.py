"""Torch devices: the ``device`` parameter of the estimators, resolved and checked."""

import torch


def resolve_device(device):
    """Turn the ``device`` parameter into an available :class:`torch.device`.

    ``device`` is 'auto' (CUDA when available, else the CPU), a
    :class:`torch.device`, or any string :class:`torch.device` parses ('cpu',
    'cuda', 'cuda:1', 'mps', ...). Raises a ValueError when the string does not
    parse, or when torch cannot reach the device (no CUDA, a CUDA index out of
    range, MPS not available, ...).
    """
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(device, torch.device):
        resolved = device
    elif isinstance(device, str):
        try:
            resolved = torch.device(device)
        except (RuntimeError, ValueError, TypeError) as error:
            raise ValueError(
                f"device={device!r} is not a torch device ({error}). Use 'cpu', "
                "'cuda', 'cuda:<index>', 'mps', another string torch.device "
                "parses, or 'auto'."
            ) from None
    else:
        raise ValueError(
            "device must be a string such as 'cpu', 'cuda:0' or 'auto', or a "
            f"torch.device; got {device!r}."
        )
    _check_available(resolved, device)
    return resolved


def _check_available(resolved, device):
    """Raise a ValueError unless torch can put tensors on ``resolved``."""
    kind = resolved.type
    if kind == "cpu":
        return
    if kind == "meta":
        raise ValueError(
            f"device={device!r} holds no data (torch's 'meta' device); use "
            "'cpu', 'cuda' or another device with memory."
        )
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device={device!r} was requested but torch finds no CUDA device. "
                "Use device='cpu' or device='auto', or install a CUDA build of "
                "torch."
            )
        count = torch.cuda.device_count()
        if resolved.index is not None and resolved.index >= count:
            raise ValueError(
                f"device={device!r} was requested but torch finds {count} CUDA "
                f"device(s), with indices 0 to {count - 1}."
            )
        return
    if kind == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(
                f"device={device!r} was requested but the MPS backend (Apple "
                "silicon GPUs) is not available on this machine or in this build "
                "of torch. Use device='cpu'."
            )
        return
    try:  # any other backend: can torch allocate there?
        torch.empty(0, device=resolved)
    except Exception as error:  # backends raise various errors
        raise ValueError(
            f"device={device!r} was requested but torch cannot use it: {error}"
        ) from None


def rows_at_once(device, bytes_per_row, cpu_rows):
    """How many samples to encode at once on ``device``.

    ``cpu_rows`` on the CPU (and on devices other than CUDA); on a CUDA device
    as many as a quarter of its free memory holds at ``bytes_per_row``, and at
    least ``cpu_rows``. A GPU's iterations cost launch overhead more than
    arithmetic: on an H200, 10^5 digits encoded as one block ran 15.8 times as
    fast as the same machine's 16 CPU cores, and in blocks of a few thousand
    rows 1.1 times (``benchmarks/results/gpu_encoding.md``).
    """
    if device.type != "cuda":
        return cpu_rows
    free, _ = torch.cuda.mem_get_info(device)
    return max(cpu_rows, int(free // 4 // max(1, bytes_per_row)))
