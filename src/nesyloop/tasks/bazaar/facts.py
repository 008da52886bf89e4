"""The Bazaar world's knowledge base: invented goods, containers, currencies and rules.

Every name is invented (compounds of made-up syllables), so a pretrained model cannot know any
fact. The whole knowledge base (names, values, frequency ranks) is a fixed function of the seed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

FACT_KINDS = ("container", "price", "currency", "rule")
RULE_TYPES = ("toll", "fee", "reward")
VALUE_RANGE = (2, 9)

# Consonant-initial syllables, so "A <good>" never needs "An".
# fmt: off
_PREFIXES = (
    "glim", "bral", "brin", "cind", "cral", "dresk", "drub", "fen", "frel", "gorm", "hask", "jin",
    "klav", "kesh", "lirn", "lom", "mub", "mor", "narf", "nib", "pim", "plov", "prax", "quin",
    "quor", "rost", "rum", "skel", "sorl", "stav", "tal", "thol", "tibb", "trel", "vask", "velk",
    "vint", "wex", "wim", "yor", "zarn", "zel", "bix",
)
_FRUITS = ("berry", "melon", "nut", "root", "fig", "pod", "plum", "bean", "gourd", "pear")
_GOODS = (
    "wick", "stone", "lamp", "charm", "bell", "cloak", "flute", "ring", "quill", "blade", "drum",
    "spool", "kettle", "comb", "lantern", "brooch",
)
_CURRENCIES = (
    "drom", "vell", "tarn", "pell", "quon", "zint", "morv", "brell", "skarn", "fid", "lune", "grot",
    "shen", "dask", "yarl", "teff", "bink", "crom", "ormin", "pazz",
)
_PLACE_PREFIXES = (
    "Quill", "Ash", "Fen", "Thorn", "Brack", "Dun", "Elm", "Gald", "Hollin", "Kess", "Lark", "Marl",
    "Nor", "Ost", "Rook", "Sill", "Tam", "Vey", "Wend", "Yarrow", "Cray", "Bram", "Dorn", "Hazel",
)
# fmt: on
_PLACE_SUFFIXES = {
    "toll": ("bridge", "gate", "ford", "pass"),
    "fee": ("well", "holt", "mere", "stead"),
    "reward": ("mont", "ric", "wyn", "dale"),
}
_RULE_WORDS = {"toll": "toll", "fee": "market fee", "reward": "guild reward"}
CONTAINERS = {  # singular -> plural
    "crate": "crates",
    "basket": "baskets",
    "sack": "sacks",
    "barrel": "barrels",
    "box": "boxes",
    "jar": "jars",
    "bundle": "bundles",
    "pouch": "pouches",
    "tray": "trays",
    "keg": "kegs",
}
_PEOPLE_TEXT = (  # Name:S (she) or Name:H (he)
    "Mira:S Tomas:H Lena:S Oskar:H Priya:S Jonah:H Ada:S Felix:H Nadia:S Ravi:H Elsa:S Hugo:H "
    "Yara:S Milo:H Ines:S Leon:H Sana:S Arlo:H Greta:S Tariq:H Wren:S Emil:H Zora:S Bruno:H "
    "Kira:S Dario:H Lotte:S Omar:H Rosa:S Nils:H Talia:S Ivo:H Maren:S Cyrus:H Fern:S Pavel:H "
    "Junia:S Silas:H Asha:S Kofi:H"
)
PEOPLE = tuple((w.split(":")[0], "She" if w.endswith(":S") else "He") for w in _PEOPLE_TEXT.split())
N_ITEMS, CONTAINERS_PER_ITEM, N_GOODS, N_CURRENCIES = 12, 4, 40, 12
N_RULES = {"toll": 14, "fee": 12, "reward": 14}


def plural(word: str) -> str:
    if word.endswith("berry"):
        return word[:-1] + "ies"
    if word.endswith(("s", "x", "z", "ch", "sh")):
        return word + "es"
    return word + "s"


@dataclass(frozen=True)
class Fact:
    # "container:crate:zelberry", "price:glimwick", "currency:drom", "rule:toll:quillbridge"
    id: str
    kind: str  # one of FACT_KINDS
    sentence: str  # "A crate of zelberries holds 6 zelberries."
    value: int
    rank: int  # 1 = most frequent in training (Zipf rank, shuffled per seed)
    template: str = field(repr=False, default="")  # sentence with "{v}" for the value

    def say(self, value: int | None = None) -> str:
        """The fact sentence, optionally with a different (wrong) value."""
        return self.template.format(v=self.value if value is None else value)


@dataclass
class World:
    """The knowledge base plus the lexicon the grammar needs."""

    seed: int
    facts: list[Fact]
    items: dict[str, str]  # item singular -> plural
    goods: dict[str, str]  # good singular -> plural
    currencies: dict[str, str]  # currency singular -> plural
    places: dict[str, tuple[str, str]]  # place lower -> (rule type, Place)
    item_containers: dict[str, list[str]]  # item -> its container types
    tail_fraction: float = 0.35
    people: tuple[tuple[str, str], ...] = PEOPLE
    by_id: dict[str, Fact] = field(init=False, repr=False)
    nouns: dict[str, tuple[str, str]] = field(init=False, repr=False)  # any form -> (kind, key)

    def __post_init__(self) -> None:
        self.by_id = {f.id: f for f in self.facts}
        self.nouns = {}
        for kind, table in (
            ("item", self.items),
            ("good", self.goods),
            ("currency", self.currencies),
        ):
            for sg, pl in table.items():
                self.nouns[sg] = (kind, sg)
                self.nouns[pl] = (kind, sg)
        for sg, pl in CONTAINERS.items():
            self.nouns[sg] = ("container", sg)
            self.nouns[pl] = ("container", sg)
        for w in ("coin", "coins"):
            self.nouns[w] = ("coin", "coin")

    def fact(self, fact_id: str) -> Fact:
        return self.by_id[fact_id]

    @property
    def tail_ids(self) -> list[str]:
        """The rarest ``tail_fraction`` of facts by Zipf rank (sorted by id)."""
        n_tail = round(self.tail_fraction * len(self.facts))
        cut = len(self.facts) - n_tail
        return sorted(f.id for f in self.facts if f.rank > cut)

    def weight(self, fact_id: str, zipf: float) -> float:
        return float(self.by_id[fact_id].rank) ** (-zipf)

    def of_kind(self, kind: str) -> list[Fact]:
        return [f for f in self.facts if f.kind == kind]

    # --- fact ids from names -------------------------------------------------------------
    def container_id(self, container: str, item: str) -> str:
        return f"container:{container}:{item}"

    def rule_type(self, fact_id: str) -> str:
        return fact_id.split(":")[1]


def _unique_names(rng: random.Random, n: int, make, taken: set[str]) -> list[str]:
    out: list[str] = []
    while len(out) < n:
        name = make()
        if name.lower() not in taken:
            taken.add(name.lower())
            out.append(name)
    return out


def build_world(seed: int = 0, tail_fraction: float = 0.35) -> World:
    """Build the knowledge base for ``seed`` (names, values and frequency ranks)."""
    rng = random.Random(f"bazaar-world-{seed}")
    taken: set[str] = set(CONTAINERS) | set(CONTAINERS.values()) | {"coin", "coins"}
    taken |= {p.lower() for p, _ in PEOPLE}
    lo, hi = VALUE_RANGE
    items = _unique_names(rng, N_ITEMS, lambda: rng.choice(_PREFIXES) + rng.choice(_FRUITS), taken)
    goods = _unique_names(rng, N_GOODS, lambda: rng.choice(_PREFIXES) + rng.choice(_GOODS), taken)
    taken |= {plural(x) for x in items + goods}
    curs = [c for c in rng.sample(_CURRENCIES, len(_CURRENCIES)) if c not in taken][:N_CURRENCIES]
    taken |= set(curs) | {plural(c) for c in curs}
    places: dict[str, tuple[str, str]] = {}
    for rtype in RULE_TYPES:
        sufs = _PLACE_SUFFIXES[rtype]
        for p in _unique_names(
            rng, N_RULES[rtype], lambda s=sufs: rng.choice(_PLACE_PREFIXES) + rng.choice(s), taken
        ):
            places[p.lower()] = (rtype, p)

    raw: list[tuple[str, str, str]] = []  # (id, kind, template)
    item_containers: dict[str, list[str]] = {}
    for item in items:
        conts = rng.sample(sorted(CONTAINERS), CONTAINERS_PER_ITEM)
        item_containers[item] = conts
        for c in conts:
            raw.append(
                (
                    f"container:{c}:{item}",
                    "container",
                    f"A {c} of {plural(item)} holds {{v}} {plural(item)}.",
                )
            )
    for g in goods:
        raw.append((f"price:{g}", "price", f"A {g} costs {{v}} coins."))
    for c in curs:
        raw.append((f"currency:{c}", "currency", f"1 {c} is {{v}} coins."))
    for low, (rtype, p) in places.items():
        raw.append((f"rule:{rtype}:{low}", "rule", f"The {p} {_RULE_WORDS[rtype]} is {{v}} coins."))

    ranks = list(range(1, len(raw) + 1))
    rng.shuffle(ranks)
    facts = []
    for (fid, kind, tpl), rank in zip(raw, ranks):
        v = rng.randint(lo, hi)
        facts.append(Fact(fid, kind, tpl.format(v=v), v, rank, tpl))
    return World(
        seed=seed,
        facts=facts,
        items={i: plural(i) for i in items},
        goods={g: plural(g) for g in goods},
        currencies={c: plural(c) for c in curs},
        places=places,
        item_containers=item_containers,
        tail_fraction=tail_fraction,
    )
