"""Assigning a converted PyTorch state dict to Keras variables, one to one and checked.

Shared by the TResNet (`tresnet_weights`) and EfficientNet-Lite0 (`efficientnet_lite_weights`)
converters: each builds `targets` = {torch name: (Keras variable, torch shape, to_keras)} for
its model; `assign_checked` refuses the whole state dict when any tensor is missing,
unexpected or of the wrong shape, and only then assigns every variable.
"""

from __future__ import annotations

import numpy as np

from sdl_tf import errors

MAX_NAMES = 8  # names listed per kind of problem in an error line


class ConversionError(errors.SDLError, ValueError):
    """The checkpoint cannot be converted (unreadable, or tensors that do not fit the arch)."""


def short_list(names) -> str:
    """Sorted names, at most `MAX_NAMES` of them, and how many more there are."""
    names = sorted(names)
    shown = ", ".join(names[:MAX_NAMES])
    return shown + (f" (+{len(names) - MAX_NAMES} more)" if len(names) > MAX_NAMES else "")


def assign_checked(targets: dict, state: dict[str, np.ndarray], source: str, model_name: str,
                   hint: str = "") -> None:
    """Assigns `state` to `targets`' variables if every name and shape fits, else raises.

    Args:
        targets: {torch name: (Keras variable, torch shape, to_keras: array -> array)}.
        state: {torch name: array}.
        source: what to call the state dict in errors (its path).
        model_name: what to call the model in errors.
        hint: appended to the error (e.g. a guess of the right architecture).

    Raises:
        ConversionError: naming every missing, unexpected and wrongly shaped tensor; nothing
            is assigned then.
    """
    missing = [k for k in targets if k not in state]
    unexpected = [k for k in state if k not in targets]
    wrong = [f"{k} {tuple(state[k].shape)} != {tuple(shape)}"
             for k, (_, shape, _) in targets.items()
             if k in state and tuple(state[k].shape) != tuple(shape)]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)}: {short_list(missing)}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)}: {short_list(unexpected)}")
        if wrong:
            parts.append(f"wrong shape {len(wrong)} (checkpoint != {model_name}, torch layout): "
                         f"{short_list(wrong)}")
        raise ConversionError(f"{source} does not fit {model_name}: {'; '.join(parts)}{hint}")
    for name, (variable, _, to_keras) in targets.items():
        variable.assign(np.asarray(to_keras(state[name]), np.float32))
