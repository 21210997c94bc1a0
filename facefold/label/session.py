"""A labeling session: the faces grouped, the decisions replayed, names proposed, folders written.

The state is a pure function of three things: the faces of the photos at hand (a
:class:`~facefold.label.store.FaceStore`), their grouping by identity (Chinese whispers on
their dlib128 descriptors, as ``faces cluster`` does; deterministic) and the decisions log.
Every decision is replayed over the grouping in order, so a restart, an undo or a second
round with more photos rebuilds the same state from the same log.

Names are proposed from the people labeled so far (the decided faces and any crops already
in ``FACES/<person>/``: the nearest centroid by cosine similarity) and, with a model, from
the model (the name most of a group's faces get, above the model's calibrated threshold).
Groups come most certain first: a group with a confident proposal before one without, then
by similarity; faces in a group most like the proposed person (or the group) first. The
groups confidently proposed as one person are shown as one group (:meth:`Session.shown_groups`).

The output is ``FACES/<person>/<photo stem>.png``, the layout of ``faces crop`` that
``dataset build`` takes; only files the session wrote itself (listed in
``.facefold-label/written.json``) are ever replaced or removed.
"""

from __future__ import annotations

import json
import shutil
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from facefold import atomic
from facefold.data.labelnoise import rank_label_issues, require
from facefold.data.records import label_name_problem, normal_name
from facefold.faces.cluster import (
    DEFAULT_THRESHOLDS,
    cluster_embeddings,
    collect_faces,
    group_faces,
    unit_vectors,
)
from facefold.faces.crop import _photo_files
from facefold.label.decisions import LOG_FILE, DecisionLog, check_decision, effective
from facefold.label.store import FaceStore

WRITTEN_FILE = "written.json"
DECISION_FIELDS = ("action", "faces", "name", "to", "reason", "request")
METHOD = "chinese-whispers"
# A proposal is confident when the mean cosine distance between the group's faces and the
# person's is under this: the distance under which average-linkage clustering (`faces cluster
# --method average`, chosen by its sweep on celeb21 and ORL) joins two groups. Not the
# distance between the two mean descriptors: means of different people are far closer
# (celeb21: two actresses' means at 0.96 similarity) than any two of their faces.
PROPOSE_DISTANCE = DEFAULT_THRESHOLDS["average"]
# The suspects panel's folds: each labeled face is judged by a regression on the other 4/5.
SUSPECT_FOLDS = 5


class Namer(Protocol):
    """What proposes names from a model: each face's name, None when unknown."""

    def __call__(self, crops: Sequence[Path]) -> list[tuple[str | None, float]]: ...


@dataclass
class State:
    """Where every face of the session stands after the decisions in force."""

    groups: dict[str, list[str]] = field(default_factory=dict)  # undecided faces by group
    person: dict[str, str] = field(default_factory=dict)  # face -> person's name
    rejected: dict[str, str] = field(default_factory=dict)  # face -> reason
    files: dict[str, str] = field(default_factory=dict)  # face -> file name in its folder
    # face -> the person it was confirmed as (the suspects panel's "keep")
    confirmed: dict[str, str] = field(default_factory=dict)

    def group_of(self, face: str) -> str | None:
        for key, members in self.groups.items():
            if face in members:
                return key
        return None


class Session:
    """One FACES folder being labeled from the faces ``pool`` (ids in ``store``)."""

    def __init__(self, out: Path, store: FaceStore, pool: Sequence[str],
                 namer: Namer | None = None) -> None:
        self.out, self.store = out, store
        self.pool = list(dict.fromkeys(pool))
        self.log = DecisionLog(store.folder / LOG_FILE)
        # Faces decided in an earlier round stay in the session when their photos are gone.
        self.known = set(self.pool) | {f for d in self.log.decisions for f in d.get("faces", [])
                                       if f in store.faces}
        self.lock = threading.Lock()
        self.base = _base_groups(store, self.pool)
        self.written = _read_written(store.folder / WRITTEN_FILE)
        self.external = self._external_people()
        self.model_names = self._model_names(namer) if namer else {}
        self.state = self.replay()
        self._suspects: tuple[int, dict[str, Any]] | None = None  # (decisions, suspects)
        self.sync()

    # ------------------------------------------------------------------ replaying decisions

    def replay(self) -> State:
        """The state after the decisions in force, from the base grouping."""
        state = State({k: list(v) for k, v in self.base.items()})
        for decision in effective(self.log.decisions):
            try:
                self._apply(state, decision)
            except ValueError:  # its faces' photos are gone from PHOTOS: nothing to group
                continue
        return state

    def _apply(self, state: State, d: dict[str, Any]) -> None:
        """Change ``state`` by decision ``d``; ``ValueError`` when it does not fit it."""
        action, faces = d["action"], d.get("faces", [])
        for face in faces:
            if face not in self.known:
                raise ValueError(f"no face {face!r} in this session")
        if action in ("merge", "split"):
            for face in faces:
                if state.group_of(face) is None:
                    raise ValueError(f"face {face} is not in a group: only faces not yet "
                                     "named or rejected are merged or split")
        if action in ("accept", "name"):
            name = check_name(d["name"])
            for face in faces:
                self._leave(state, face)
                self._file(state, face, name)
        elif action == "rename":
            old, new = normal_name(d["name"]), check_name(d["to"])
            members = [f for f, p in state.person.items() if p == old]
            if not members:
                raise ValueError(f"no person {old!r} to rename")
            for face in members:
                self._leave(state, face)
            for face in members:
                self._file(state, face, new)
        elif action == "merge":
            target = state.group_of(faces[0])
            for face in faces[1:]:
                self._leave(state, face)
                state.groups[target].append(face)
        elif action == "split":
            for face in faces:
                self._leave(state, face)
            state.groups[f"s{d['seq']}"] = list(faces)
        elif action == "confirm":
            for face in faces:
                if face not in state.person:
                    raise ValueError(f"face {face} is not named: only a named face is kept")
                state.confirmed[face] = state.person[face]
        elif action == "reject":
            if any(face in state.rejected for face in faces):
                raise ValueError(f"face {next(f for f in faces if f in state.rejected)} is "
                                 "rejected already")
            for face in faces:
                self._leave(state, face)
                state.rejected[face] = d["reason"]

    @staticmethod
    def _leave(state: State, face: str) -> None:
        """Take ``face`` out of its group, person or the rejected ones."""
        key = state.group_of(face)
        if key is not None:
            state.groups[key].remove(face)
            if not state.groups[key]:
                del state.groups[key]
        state.person.pop(face, None)
        state.files.pop(face, None)
        state.rejected.pop(face, None)

    def _file(self, state: State, face: str, name: str) -> None:
        """File ``face`` under ``name`` with a file name free in that person's folder."""
        taken = {state.files[f] for f, p in state.person.items() if p == name}
        taken |= self.external.get(name, {}).keys()
        wanted = Path(self.store.faces[face].name)
        candidate, k = wanted.name, 1
        while candidate in taken:
            k += 1
            candidate = f"{wanted.stem}-{k}{wanted.suffix}"
        state.person[face], state.files[face] = name, candidate

    # ------------------------------------------------------------------ decisions

    def decide(self, decision: dict[str, Any]) -> dict[str, Any]:
        """Check ``decision`` against the state, log it (on disk), apply it and write the
        folders; returns the new view. ``ValueError`` for a decision that does not fit."""
        with self.lock:
            request = decision.get("request")
            if request and request in self.log.requests:  # a retried request: done already
                return self.view()
            # What the page may say; the number, time and undone decision are the log's.
            decision = {k: decision[k] for k in DECISION_FIELDS if decision.get(k) is not None}
            if decision.get("action") == "undo":
                last = effective(self.log.decisions)
                if not last:
                    raise ValueError("nothing to undo")
                decision["undone"] = last[-1]["seq"]
                state = None
            else:
                state = self._trial(decision)
            self.log.append(decision)
            self.state = state or self.replay()
            self.sync()
            return self.view()

    def _trial(self, decision: dict[str, Any]) -> State:
        """The state after ``decision``, without logging it (``ValueError`` if it does not fit)."""
        trial = {**decision, "seq": self.log.next_seq, "undone": 0}
        check_decision(trial)
        state = _copy(self.state)
        self._apply(state, trial)
        return state

    # ------------------------------------------------------------------ output folders

    def sync(self) -> None:
        """Make ``FACES/<person>/`` hold exactly the decided faces (of the files it owns)."""
        wanted = {f"{p}/{self.state.files[f]}": f for f, p in self.state.person.items()}
        path = self.store.folder / WRITTEN_FILE
        # Listed before written, so that a kill in between leaves nothing unowned behind.
        atomic.write_json_atomic(path, {**self.written, **wanted})
        for rel, face in wanted.items():
            target = self.out / rel
            if self.written.get(rel) != face or not target.exists():
                with atomic.atomic_path(target) as tmp:  # a copy: the cache stays as it was
                    shutil.copyfile(self.store.crop_path(face), tmp)
        for rel in set(self.written) - set(wanted):
            target = self.out / rel
            target.unlink(missing_ok=True)
            if target.parent.exists() and not any(target.parent.iterdir()):
                target.parent.rmdir()
        self.written = wanted
        atomic.write_json_atomic(path, wanted)

    # ------------------------------------------------------------------ proposals and view

    def _external_people(self) -> dict[str, dict[str, np.ndarray]]:
        """The crops already in FACES person folders that this session did not write:
        person -> file name -> descriptor (each picture taken whole, as a face crop)."""
        if not self.out.is_dir():
            return {}
        owned = {self.out / rel for rel in self.written}
        files = [p for p in _photo_files(self.out, exclude=self.store.folder) if p not in owned
                 and p.parent != self.out]
        if not files:
            return {}
        found = collect_faces(self.out, None, crops=True, files=files, log=lambda _: None)
        people: dict[str, dict[str, np.ndarray]] = {}
        for face, vector in zip(found.faces, found.vectors, strict=True):
            parts = face.file.split("/")
            people.setdefault(normal_name(parts[0]), {})["/".join(parts[1:])] = vector
        return people

    def _model_names(self, namer: Namer) -> dict[str, tuple[str | None, float]]:
        names = namer([self.store.crop_path(f) for f in self.pool])
        return dict(zip(self.pool, names, strict=True))

    def centroids(self) -> tuple[list[str], np.ndarray]:
        """The people labeled so far and their mean unit descriptors (P, 128), not rescaled:
        a face's dot product with one is its mean cosine similarity to the person's faces."""
        members: dict[str, list[np.ndarray]] = {}
        for name, files in self.external.items():
            members.setdefault(name, []).extend(files.values())
        for face, name in self.state.person.items():
            members.setdefault(name, []).append(self.store.vectors[face])
        names = sorted(members)
        if not names:
            return [], np.zeros((0, 128))
        return names, np.stack([unit_vectors(np.stack(members[n])).mean(axis=0) for n in names])

    def proposal(self, faces: Sequence[str], names: list[str],
                 centroids: np.ndarray) -> dict[str, Any] | None:
        """The name proposed for a group of ``faces``: the model's, when most of the faces
        get the same known name from it, else the nearest labeled person's."""
        model = Counter(self.model_names[f][0] for f in faces
                        if self.model_names.get(f, (None, 0))[0])
        if model:
            name, votes = model.most_common(1)[0]
            if 2 * votes >= len(faces):
                scores = [self.model_names[f][1] for f in faces if self.model_names[f][0] == name]
                return {"name": name, "similarity": round(float(np.mean(scores)), 4),
                        "confident": True, "source": "model"}
        if not names:
            return None
        # The mean cosine similarity between the group's faces and each person's.
        similarity = centroids @ unit_vectors(self.store.matrix(list(faces))).mean(axis=0)
        best = int(np.argmax(similarity))
        return {"name": names[best], "similarity": round(float(similarity[best]), 4),
                "confident": bool(similarity[best] >= 1 - PROPOSE_DISTANCE), "source": "people"}

    def shown_groups(self, names: list[str],
                     centroids: np.ndarray) -> list[tuple[str, list[str], dict | None]]:
        """``(id, faces, proposal)`` of the groups the page shows: the groups of the state,
        but every group confidently proposed as one person shown as one group for them (their
        least similar faces last, to be checked), as a photo manager's "more photos of X?".
        A group split off by hand is always shown alone."""
        shown: list[tuple[str, list[str], dict | None]] = []
        by_person: dict[str, list[str]] = {}
        for key, faces in self.state.groups.items():
            proposal = self.proposal(faces, names, centroids)
            if proposal and proposal["confident"] and not key.startswith("s"):
                if proposal["name"] not in by_person:
                    by_person[proposal["name"]] = []
                    shown.append((key, by_person[proposal["name"]], None))
                by_person[proposal["name"]].extend(faces)
            else:
                shown.append((key, faces, proposal))
        return [(key, faces, proposal or self.proposal(faces, names, centroids))
                for key, faces, proposal in shown]

    def view(self) -> dict[str, Any]:
        """What the page shows (see :func:`facefold.label.app.create_label_app`)."""
        names, centroids = self.centroids()
        groups = []
        for key, faces, proposal in self.shown_groups(names, centroids):
            units = unit_vectors(self.store.matrix(faces))
            if proposal and proposal["name"] in names:
                toward = centroids[names.index(proposal["name"])]
            else:
                toward = units.mean(axis=0)  # each face's mean similarity to the group
            similarity = units @ toward
            order = np.argsort(-similarity, kind="stable")
            groups.append({"id": key, "proposal": proposal, "faces": [
                self._face_view(faces[i], float(similarity[i])) for i in order]})
        groups.sort(key=_certainty)
        people = Counter(self.state.person.values())
        return {
            "groups": groups,
            "people": [{"name": n, "faces": people[n],
                        "existing": len(self.external.get(n, {})),
                        "face_ids": [f for f, p in self.state.person.items() if p == n]}
                       for n in sorted(set(people) | set(self.external))],
            "rejected": [{**self._face_view(f), "reason": r}
                         for f, r in self.state.rejected.items()],
            "decisions": len(self.log.decisions),
            "can_undo": bool(effective(self.log.decisions)),
            "out": str(self.out),
        }

    def suspects(self) -> dict[str, Any]:
        """The named faces whose name looks wrong, most suspect first (the suspects panel):
        the confident-learning ranking of ``dataset audit`` (:mod:`facefold.data.labelnoise`)
        on the descriptors of every labeled face, this session's and those already in the
        person folders, in :data:`SUSPECT_FOLDS` folds. Only this session's faces are listed
        (they are the ones a decision can move), and not those kept (``confirm``) as the
        person they still are. ``ModuleNotFoundError`` naming the pip command without the
        ``audit`` extra."""
        require("the suspects panel")
        key = len(self.log.decisions)
        if self._suspects is not None and self._suspects[0] == key:
            return self._suspects[1]
        faces = sorted(self.state.person)
        rows = [(f, self.state.person[f], self.store.vectors[f]) for f in faces]
        rows += [(None, person, vector) for person, files in sorted(self.external.items())
                 for _, vector in sorted(files.items(), key=lambda item: item[0])]
        names = sorted({person for _, person, _ in rows})
        listed: list[dict[str, Any]] = []
        if len(names) >= 2:
            labels = np.array([names.index(person) for _, person, _ in rows])
            # Each person's faces dealt round the folds, so every fold trains on every
            # person with more than one face.
            folds = np.zeros(len(rows), np.int64)
            for k in range(len(names)):
                members = np.flatnonzero(labels == k)
                folds[members] = np.arange(len(members)) % SUSPECT_FOLDS
            features = np.stack([vector for _, _, vector in rows]).astype(np.float64)
            for issue in rank_label_issues(features, labels, folds, len(names)):
                face = rows[issue.index][0]
                if face is None or self.state.confirmed.get(face) == self.state.person[face]:
                    continue
                listed.append({**self._face_view(face), "given": self.state.person[face],
                               "suggested": names[issue.suggested],
                               "score": round(issue.score, 4), "kind": issue.kind,
                               "detail": issue.detail})
        result = {"suspects": listed, "labeled": len(rows), "people": len(names)}
        self._suspects = (key, result)
        return result

    def _face_view(self, face: str, similarity: float | None = None) -> dict[str, Any]:
        view = {"id": face, "photo": self.store.faces[face].photo}
        if similarity is not None:
            view["similarity"] = round(similarity, 4)
        return view


def _certainty(group: dict[str, Any]) -> tuple:
    proposal = group["proposal"] or {}
    return (not proposal.get("confident", False), -proposal.get("similarity", -1.0),
            -len(group["faces"]), group["id"])


def _base_groups(store: FaceStore, pool: Sequence[str]) -> dict[str, list[str]]:
    """The pool grouped by identity, every face in a group (singletons too), most typical
    first; keys "g1", "g2" … largest first."""
    if not pool:
        return {}
    vectors = store.matrix(list(pool))
    labels = cluster_embeddings(vectors, METHOD, DEFAULT_THRESHOLDS[METHOD])
    groups, _ = group_faces(labels, unit_vectors(vectors), min_size=1)
    return {f"g{k}": [pool[i] for i in members] for k, members in enumerate(groups, start=1)}


def _copy(state: State) -> State:
    return State({k: list(v) for k, v in state.groups.items()}, dict(state.person),
                 dict(state.rejected), dict(state.files), dict(state.confirmed))


def _read_written(path: Path) -> dict[str, str]:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def check_name(name: str) -> str:
    """``name`` in NFC when it can name a person's folder; ``ValueError`` saying why not."""
    name = normal_name(name)
    problem = label_name_problem(name)
    if problem:
        raise ValueError(f"person name {name!r} {problem}")
    if name.startswith("."):
        raise ValueError(f"person name {name!r} starts with a dot: `dataset build` skips "
                         "hidden folders")
    return name
