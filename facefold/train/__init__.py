"""Training: one network (:mod:`.trainer`) or an ensemble of them (:mod:`.ensemble`).

:func:`train` is the entry point for any config; the model family decides which.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from facefold.config import Config
from facefold.data.pipeline import Split
from facefold.log import Log
from facefold.models.families import Ensemble, SplitSource, family_of
from facefold.train.ensemble import train_ensemble
from facefold.train.trainer import Trainer


def train(
    data_dir: str | Path,
    config: Config,
    out: str | Path,
    eval_shards: Sequence[int] = (0,),
    splits: list[Split] | SplitSource | None = None,
    log: Log = print,
    people: Sequence[str] | None = None,
    restart: bool = False,
    member_dirs: Mapping[str, Path] | None = None,
) -> list[dict]:
    """Train on all shards but ``eval_shards``, evaluate on those; return the metrics rows.

    ``splits`` are the shards' inputs loaded beforehand to share between folds: a list, or a
    :class:`~facefold.models.families.SplitSource` (which an ensemble needs: its members take
    different inputs); by default they are loaded here. ``people`` is the label list (index =
    label) when ``splits`` were relabelled to a subset of the dataset's people. ``restart``
    discards a run of other data or config in ``out`` instead of refusing it
    (:class:`facefold.runs.RunMismatchError`). ``member_dirs`` hands an ensemble's members
    their run folders by preset (a finished run there is reused); the others are trained into
    ``out/members/<preset>``.
    """
    # The one switch on the family in training: an ensemble trains its members and combines
    # them (train.ensemble, a layer the families in models/ cannot call); the rest train a
    # network of their own.
    if isinstance(family_of(config), Ensemble):
        source = splits if isinstance(splits, SplitSource) or splits is None else None
        if splits is not None and source is None:
            raise ValueError("an ensemble's members take different inputs: give a SplitSource "
                             "(or nothing), not one list of splits")
        return train_ensemble(data_dir, config, out, eval_shards, source, log, people, restart,
                              member_dirs)
    return Trainer(data_dir, config, out, eval_shards, splits, log, people=people,
                   restart=restart).run()


__all__ = ["train"]
