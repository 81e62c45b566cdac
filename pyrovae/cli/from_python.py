"""``--from-python FILE.py:FUNC``: evaluate or diagnose a Pyro model/guide pair the user wrote.

``FUNC()`` (no arguments) returns the pair: a tuple ``(model, guide)`` or an object with
``model`` and ``guide`` methods (a module written as Pyro's VAE tutorial writes one).
``--params FILE`` loads its trained weights: Pyro's param store
(``pyro.get_param_store().save(FILE)``) or a module's ``state_dict`` (``torch.save``). The
data are a built-in data set (``--dataset``, ``--data-root``) or the user's own (``--data``).
The pair is read with :func:`pyrovae.from_pyro` on the first training rows.
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import sys
from pathlib import Path
from typing import Any

from pyrovae.cli.common import CommandError
from pyrovae.settings import DATASET_NAMES


def add_from_python_flags(p: argparse.ArgumentParser, beside_runs: bool = False) -> None:
    where = (
        "after the RUN_DIRs, on their data (or alone)"
        if beside_runs
        else "instead of RUN_DIR (needs --out)"
    )
    p.add_argument(
        "--from-python",
        metavar="FILE.py:FUNC",
        help=f"a Pyro model/guide pair you wrote, {where}; FUNC() returns (model, guide) or "
        "an object with model and guide methods; a model(x, y) is a CVAE of the data's labels",
    )
    p.add_argument(
        "--params",
        metavar="FILE",
        help="with --from-python: the trained weights, Pyro's param store "
        "(pyro.get_param_store().save) or a module's state_dict (torch.save)",
    )
    p.add_argument(
        "--dataset",
        choices=sorted(DATASET_NAMES),
        help="with --from-python: a built-in data set (default: mnist; --data PATH for yours)",
    )


def check_target(args: argparse.Namespace) -> None:
    """RUN_DIR or --from-python, one of them; --params and --dataset need --from-python."""
    if (args.run_dir is None) == (args.from_python is None):
        raise CommandError(
            "give RUN_DIR or --from-python FILE.py:FUNC (one of them), got "
            + ("both" if args.run_dir else "neither")
        )
    if args.from_python is None:
        stray = [f for f in ("params", "dataset") if getattr(args, f) is not None]
        if stray:
            raise CommandError(
                f"--{stray[0]} applies to --from-python only; drop it (a run directory "
                "knows its weights and data)"
            )
    elif args.out is None:
        raise CommandError("--from-python needs --out (there is no run directory to write to)")


def build_pair(spec: str) -> tuple[Any, Any]:
    """``(model, guide)`` from ``FILE.py:FUNC``."""
    path, _, name = spec.rpartition(":")
    if not path or not name:
        raise CommandError(f"--from-python {spec!r} must be FILE.py:FUNC, e.g. my_vae.py:build")
    file = Path(path)
    if not file.is_file():
        raise CommandError(f"--from-python: {path!r} is not a file; give FILE.py:FUNC")
    module_spec = importlib.util.spec_from_file_location(f"pyrovae_user_{file.stem}", file)
    if module_spec is None or module_spec.loader is None:
        raise CommandError(f"--from-python: {path!r} is not a Python file")
    module = importlib.util.module_from_spec(module_spec)
    sys.path.insert(0, str(file.resolve().parent))
    try:
        module_spec.loader.exec_module(module)
        func = getattr(module, name, None)
        if not callable(func):
            raise CommandError(f"--from-python: {path} defines no function {name!r}")
        built = func()
    except CommandError:
        raise
    except Exception as err:
        raise CommandError(
            f"--from-python {spec}: {type(err).__name__}: {' '.join(str(err).split())}"
        ) from None
    finally:
        sys.path.remove(str(file.resolve().parent))
    if isinstance(built, tuple) and len(built) == 2:
        return built
    if callable(getattr(built, "model", None)) and callable(getattr(built, "guide", None)):
        return built.model, built.guide
    raise CommandError(
        f"--from-python {spec}: {name}() returned a {type(built).__name__}; return "
        "(model, guide) or an object with model and guide methods"
    )


def load_params(path: str, model: Any, guide: Any, *args: Any) -> None:
    """Load ``path`` into the pair: a ``state_dict`` into the module that owns ``model``, or
    Pyro's param store, whose values are then copied into the modules that ``pyro.module``
    registers (which keep their own tensors otherwise)."""
    import pyro
    import pyro.poutine as poutine
    import torch
    from pyro.poutine.messenger import Messenger
    from torch import nn

    file = Path(path)
    if not file.is_file():
        raise CommandError(f"--params {path!r} is not a file")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception:
        state = None
    owner = getattr(model, "__self__", None)
    tensors = isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values())
    if tensors and state:
        if not isinstance(owner, nn.Module):
            raise CommandError(
                f"--params {path} is a state_dict, but the model is not a method of an "
                "nn.Module to load it into; save Pyro's param store instead"
            )
        try:
            owner.load_state_dict(state)
        except RuntimeError as err:
            first = str(err).splitlines()[0]
            raise CommandError(f"--params {path} does not fit the module: {first}") from None
        return
    try:
        pyro.get_param_store().load(str(file), map_location="cpu")
    except Exception as err:
        raise CommandError(
            f"--params {path} is neither a state_dict nor Pyro's param store ({type(err).__name__})"
        ) from None
    store = pyro.get_param_store()

    class _CopyIn(Messenger):
        def _process_message(self, msg: dict[str, Any]) -> None:
            init = msg["args"][1] if msg["type"] == "param" and len(msg["args"]) > 1 else None
            if isinstance(init, nn.Parameter) and msg["name"] in store:
                with torch.no_grad():
                    init.copy_(store[msg["name"]].to(init.device, init.dtype))

    with poutine.block():
        for fn in (guide, model):
            poutine.trace(_CopyIn()(fn)).get_trace(*args)


def load_pair(args: argparse.Namespace, device: Any, data: Any = None) -> tuple[Any, Any]:
    """The user's pair as a pyrovae VAE on ``device``, and the data's splits (``data`` when
    given, e.g. those of the runs it is reported beside)."""
    from pyrovae.data import fixed_binarization
    from pyrovae.pyro_pair import from_pyro
    from pyrovae.run_data import load_dataset
    from pyrovae.train import one_hot

    model, guide = build_pair(args.from_python)
    if data is None and args.data is not None:
        data = load_dataset(args.data)
    elif data is None:
        data = load_dataset(args.dataset or "mnist", args.data_root)
    example = data.train.x[:8]
    if data.kind == "unit":  # the rows a Bernoulli model is trained on
        example = fixed_binarization(example)
    labels = None
    if takes_labels(model):
        classes = int(getattr(data, "num_classes", 0) or 0)
        if classes < 2:
            raise CommandError(
                f"--from-python {args.from_python}: the model takes labels (model(x, y)), but "
                "the data have none; give labelled data, or a model(x) without labels"
            )
        labels = one_hot(data.train.y[:8], classes)
    args_of_pair = (example,) if labels is None else (example, labels)
    if args.params is not None:
        load_params(args.params, model, guide, *args_of_pair)
    vae = from_pyro(model, guide, *args_of_pair)
    return vae.to(device).eval(), data.to(device)


def takes_labels(model: Any) -> bool:
    """True when ``model`` needs a second argument, ``model(x, y)``: a CVAE whose one-hot
    labels y come from the data (a ``y=None`` default reads as an unconditional VAE)."""
    try:
        parameters = inspect.signature(model).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    required = [p for p in parameters if p.kind in positional and p.default is p.empty]
    return len(required) >= 2
