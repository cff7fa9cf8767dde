"""Entity stage: forgotten subject names and their attributes, as keyed char-view digests.

A name alone only *arms* the session (the semantic stage then checks that forget's facts); a
name and an attribute of the same forget within `entity_window_chars` letters and digits of each
other block — that pair is the fact. The window counts letters, not words, so spacing a name out
("E l e n a") does not stretch it. When the prompt named the subject (strict mode), an attribute
alone blocks: the question already supplied the name ("Where was Elena Varga born?" -> "In
Lisbon."). Attributes are never blocked on their own otherwise: "Lisbon" is not a secret.

The names of a subject the Forget *listed* (its full name, its initial forms and a distinctive
surname: name_forms.py) are also stored as KIND_SUBJECT, and until the
forget's adapter is verified the subject policy applies to it: "name" blocks the name alone;
"value" hands the sighting to the session, which looks for a value next to it (it has the raw
text; subject_policy.py). "off" keeps the rules above only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from functools import partial

from server.guard.encodings import char_variants
from server.guard.entries import KIND_ATTR, KIND_NAME, KIND_SUBJECT, char_records
from server.guard.extract import Extracted
from server.guard.index import Owners, Postings
from server.guard.stages.base import Derived, OutputFilter, SessionFlags, register_stage


@dataclass
class _Sightings:
    names: dict[str, int] = field(default_factory=dict)  # forget id -> letter offset last seen
    # (letter offset, forget ids) per attribute sighting; a common value ("Lisbon") can belong to
    # many forgets, so the set is kept whole and asked only about the few names seen.
    attrs: list[tuple[int, Owners]] = field(default_factory=list)


@register_stage("entity")
class EntityStage(OutputFilter):
    kinds = frozenset({KIND_NAME, KIND_ATTR, KIND_SUBJECT})

    def derive(self, ex: Extracted) -> Derived:
        keys, C = self.env.keys, self.env.config.char_gram
        variants = partial(char_variants, encodings=self.env.config.encodings)  # rot13 / leet
        recs: dict[bytes, None] = {}
        for kind, strings in ((KIND_NAME, ex.names), (KIND_ATTR, ex.attributes),
                              (KIND_SUBJECT, ex.listed)):
            for s in strings:  # a long name is matched by its anchored gram, like a passage
                recs.update(dict.fromkeys(char_records(kind, s, keys.char_digest, C, variants)))
        return Derived(records=list(recs))

    def start(self, flags: SessionFlags) -> _Sightings:
        return _Sightings()

    def on_postings(self, state: _Sightings, flags: SessionFlags, pos: int,
                    found: list[Postings]) -> str | None:
        window = self.env.config.entity_window_chars
        attrs = state.attrs
        while attrs and pos - attrs[0][0] > window:
            attrs.pop(0)
        policy = self.env.config.subject_policy
        for p in found:
            if p[KIND_SUBJECT] and policy != "off":
                phases = self.env.index.phases
                for fid in p[KIND_SUBJECT]:
                    if phases.get(fid) == "before_adapter":  # a verified adapter lifts the policy
                        if policy == "name":
                            return fid
                        flags.subjects_seen.append(fid)
            for fid in p[KIND_NAME]:
                flags.armed = True
                flags.context.add(fid)
                state.names[fid] = pos
                for _, owners in attrs:  # attribute first, then the name
                    if fid in owners:
                        return fid
            owners = p[KIND_ATTR]
            if owners:
                attrs.append((pos, owners))
                for fid in flags.prompt_forgets:  # the prompt named the subject
                    if fid in owners:
                        return fid
                for fid, seen in state.names.items():
                    if pos - seen <= window and fid in owners:
                        return fid
        return None
