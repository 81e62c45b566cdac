"""The evaluation's flags, shared by ``pyrovae evaluate`` and ``pyrovae report``, and the
:class:`~pyrovae.settings.EvaluationSettings` they make."""

from __future__ import annotations

import argparse
from typing import Any

from pyrovae.cli.common import (
    CommandError,
    add_checkpoint_flag,
    count_or_all,
    non_negative_int,
    positive_int,
)
from pyrovae.settings import (
    PROPOSAL_NAMES,
    SOURCE_NAMES,
    SPLIT_NAMES,
    EvaluationSettings,
)

DEFAULTS = EvaluationSettings()


def add_evaluation_flags(p: argparse.ArgumentParser) -> None:
    """The settings of an evaluation (:class:`pyrovae.settings.EvaluationSettings`).

    Every default is None here, so that ``report`` can tell which were asked for; the
    defaults shown are those of the settings."""
    d = DEFAULTS
    p.add_argument(
        "--num-samples",
        type=positive_int,
        metavar="K",
        help=f"importance samples per held-out datum (default: {d.num_samples})",
    )
    p.add_argument(
        "--sources",
        nargs="+",
        choices=SOURCE_NAMES,
        metavar="NAME",
        help=f"latent sources (default: all of {', '.join(SOURCE_NAMES)})",
    )
    p.add_argument("--split", choices=SPLIT_NAMES, help="held-out split (default: test)")
    p.add_argument(
        "--num-test",
        type=count_or_all,
        metavar="N|all",
        help=f"evaluate N held-out images, a fixed random subset (default: {d.num_test}; "
        "'all' for every one)",
    )
    p.add_argument(
        "--full",
        action="store_true",
        default=None,
        help="every held-out image and every training encoding (--num-test all --num-train "
        "all): the full budget, whose cost is printed before it starts",
    )
    p.add_argument(
        "--proposal",
        choices=PROPOSAL_NAMES,
        help="importance proposal: a defensive mixture of the guide and a proposal adapted "
        "to each source, shared by all sources (adapted, default), one such mixture per "
        "source (separate), or the guide alone (guide)",
    )
    p.add_argument(
        "--ais-num-test",
        type=positive_int,
        metavar="N",
        help="also run AIS for every source on the first N of the held-out images, and for "
        "each such source BDMC on data simulated from it (default: no AIS)",
    )
    p.add_argument(
        "--ais-steps",
        type=positive_int,
        metavar="T",
        help=f"AIS intermediate distributions (default: {d.ais_steps})",
    )
    p.add_argument(
        "--ais-chains",
        type=positive_int,
        metavar="C",
        help=f"AIS chains per image (default: {d.ais_chains})",
    )
    p.add_argument(
        "--ais-leapfrog",
        type=positive_int,
        metavar="L",
        help=f"leapfrog steps per HMC transition of AIS (default: {d.ais_leapfrog})",
    )
    p.add_argument(
        "--ais-sources",
        nargs="+",
        choices=SOURCE_NAMES,
        metavar="NAME",
        help="run AIS for these sources only (default: every evaluated source; the exact "
        "aggregate costs a density over all training encodings per leapfrog step)",
    )
    p.add_argument(
        "--bdmc-num-data",
        type=non_negative_int,
        metavar="N",
        help="data simulated from each AIS'd source for its own BDMC gap (forward AIS from "
        "the start its AIS used), with --ais-num-test; costs about twice that source's AIS "
        f"on N images (default: {d.bdmc_num_data}; 0 skips BDMC)",
    )
    p.add_argument(
        "--num-train",
        type=count_or_all,
        metavar="N|all",
        help=f"fit the sources to the first N training images (default: {d.num_train}; "
        "'all' for all 50,000)",
    )
    p.add_argument(
        "--flow-steps",
        type=positive_int,
        metavar="N",
        help=f"optimizer steps of the flow source (default: {d.flow_steps})",
    )
    p.add_argument(
        "--aggregate-components",
        type=count_or_all,
        metavar="N|all",
        help="training encodings in the 'aggregate' source of a guide that is not a diagonal "
        "Normal (the flow guide: each draw costs a pass of its networks per encoding), a "
        "seeded random subset; 'all' sums all of them, exactly and slowly (default: "
        f"{d.aggregate_components}; a diagonal guide always uses all)",
    )
    p.add_argument(
        "--num-quality-samples",
        type=positive_int,
        metavar="N",
        help=f"decoded samples per source scored by the classifier (default: "
        f"{d.num_quality_samples})",
    )
    p.add_argument(
        "--no-quality",
        dest="quality",
        action="store_false",
        default=None,
        help="skip the classifier-based sample-quality scores",
    )
    p.add_argument("--seed", type=non_negative_int, help="random seed (default: 0)")
    add_checkpoint_flag(p, default=None)


def settings_from(args: argparse.Namespace) -> tuple[EvaluationSettings, set[str]]:
    """The evaluation settings of the flags, and the names of those given."""
    if getattr(args, "full", None):
        for key, flag in (("num_test", "--num-test"), ("num_train", "--num-train")):
            if getattr(args, key, None) not in (None, "all"):
                raise CommandError(
                    f"--full asks for every image, but {flag} {getattr(args, key)} asks for "
                    f"fewer; drop one of them"
                )
            setattr(args, key, "all")
    asked = {f for f in DEFAULTS.to_dict() if getattr(args, f, None) is not None}
    kwargs: dict[str, Any] = {f: getattr(args, f) for f in asked}
    for key in ("num_test", "num_train"):
        if kwargs.get(key) == "all":
            kwargs[key] = None
    for key in ("sources", "ais_sources"):
        if key in kwargs:
            kwargs[key] = tuple(dict.fromkeys(kwargs[key]))
    if args.ais_num_test is None:
        ais_only = sorted(asked & {"ais_steps", "ais_chains", "ais_leapfrog", "ais_sources"})
        if ais_only:
            flags = ", ".join("--" + k.replace("_", "-") for k in ais_only)
            raise CommandError(f"{flags} need --ais-num-test N")
    settings = EvaluationSettings(**kwargs)
    if settings.ais_sources is not None:
        missing = sorted(set(settings.ais_sources) - set(settings.sources))
        if missing:
            raise CommandError(
                f"--ais-sources names {missing}, which --sources does not evaluate; add them "
                "to --sources or drop them"
            )
    return settings, asked


def classifier_for(data: Any, settings: EvaluationSettings, device: Any) -> Any:
    if not settings.quality:
        return None
    if data.name != "mnist":  # a classifier of the data's own (trained once, cached)
        from pyrovae.analysis.quality.data_quality import data_quality

        return data_quality(data, device=device, progress=True)
    from pyrovae.analysis.quality.classifier import load_classifier

    return load_classifier(data, device=device, progress=True)
