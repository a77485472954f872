"""Which product a firmware build is, and whether it is this project's reference.

A report, a MUD file and an SBOM describe the product under test, not the
reference it was copied from. The product's identity comes from two places,
both read as data (nothing of the firmware runs on the host):

- the build: `MODEL`, `VERSION`, `PROFILE`, `DOCS_URL`, `SUPPORT_UNTIL` in
  lib/sbd/version.py and `MUD_BASE` in lib/sbd/network_policy.py, read as text;
- the declaration beside the build, features.json (already the feature
  declaration): its `model`, which must be the build's, and its `product`
  object: `name`, `supplier`, `description` (the MUD file's systeminfo and the
  SBOM's description) and `docs`, the map from the reference's pages under
  docs/ to the product's own pages (relative to its DOCS_URL and its `--docs`
  folder), which the coverage tables cite.

The reference build is the one whose MODEL is the reference's
(`REFERENCE["MODEL"]`, "sbd-reference-esp32"): the project's firmware/, its
insecure lab profile and the test variants built from it. Only for it do the
document checks fall back to the project's own docs/ and the coverage tables
cite the project's pages. Any other model is a product: its documents are a
required input (`--docs`), and every value in `REQUIRED` still at the
reference's value fails the check that reads it, naming the value.
docs/product.md lists what a product changes.
"""
from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from sbd_harness.errors import SbdError
from sbd_harness.paths import REPO_ROOT

# The reference's own values (firmware/lib/sbd/version.py and network_policy.py; a unit test keeps them equal).
REFERENCE = {
    "MODEL": "sbd-reference-esp32",
    "DOCS_URL": "https://docs.example.invalid/sbd-reference-esp32/",
    "SUPPORT_UNTIL": "2031-12-31",
    "MUD_BASE": "https://mud.example.invalid/",
}
REFERENCE_DOCS = REPO_ROOT / "docs"

# The values a product must change, and the file of the build that holds each.
REQUIRED = {
    "MODEL": "lib/sbd/version.py",
    "DOCS_URL": "lib/sbd/version.py",
    "SUPPORT_UNTIL": "lib/sbd/version.py",
    "MUD_BASE": "lib/sbd/network_policy.py",
}
SOURCES = {"lib/sbd/version.py": ("MODEL", "VERSION", "PROFILE", "DOCS_URL", "SUPPORT_UNTIL"),
           "lib/sbd/network_policy.py": ("MUD_BASE",)}
DECLARATION_KEYS = {"name": str, "supplier": str, "description": str, "docs": dict}


class ProductError(SbdError, ValueError):
    """A build whose declaration does not describe it (bad input: exit 2)."""


def _constant(source: str, name: str) -> str | None:
    m = re.search(rf'^{name}\s*=\s*"([^"]*)"', source, re.M)
    return m.group(1) if m else None


@dataclass
class Product:
    model: str | None
    version: str | None
    profile: str | None
    docs_url: str | None
    support_until: str | None
    mud_base: str | None
    name: str | None = None
    supplier: str | None = None
    description: str | None = None
    docs: dict[str, str | None] = field(default_factory=dict)
    declaration: str | None = None

    @property
    def reference(self) -> bool:
        return self.model == REFERENCE["MODEL"]

    @property
    def title(self) -> str:
        """How reports name it: the declared name, else the model."""
        return self.name or self.model or "unknown firmware"

    @property
    def mud_url(self) -> str | None:
        return self.mud_base + self.model + ".json" if self.mud_base and self.model else None

    def value(self, key: str) -> str | None:
        return {"MODEL": self.model, "DOCS_URL": self.docs_url, "SUPPORT_UNTIL": self.support_until,
                "MUD_BASE": self.mud_base}[key]

    def describe(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(reference=self.reference, mud_url=self.mud_url)
        return out


def from_sources(sources: dict[str, bytes], features: dict[str, Any] | None = None) -> Product:
    """The product a build's sources (device path -> bytes) and its declaration describe."""
    found: dict[str, str | None] = {}
    for rel, names in SOURCES.items():
        text = (sources.get("/" + rel) or b"").decode(errors="replace")
        found.update({n: _constant(text, n) for n in names})
    product = Product(model=found["MODEL"], version=found["VERSION"], profile=found["PROFILE"],
                      docs_url=found["DOCS_URL"], support_until=found["SUPPORT_UNTIL"], mud_base=found["MUD_BASE"])
    if features:
        where = features.get("path", "features.json")
        declared = features.get("model")
        if declared is not None and declared != product.model:
            hint = " (the reference's: the declaration was not changed for this product)" \
                if declared == REFERENCE["MODEL"] else ""
            raise ProductError(f"{where} declares model {declared!r}{hint}, but the build's lib/sbd/version.py "
                               f"says MODEL = {product.model!r}: the declaration must describe this build")
        decl = features.get("product") or {}
        for key, value in decl.items():
            if value is not None:
                setattr(product, key, value)
        product.declaration = where
    return product


def from_bundle(bundle: Any, features: dict[str, Any] | None = None) -> Product:
    return from_sources(bundle.sources, features)


def from_folder(folder: Path) -> Product:
    """The product of a firmware folder (its sources read as text, its features.json as data)."""
    from sbd_harness.reports import features as feature_decl
    folder = Path(folder)
    sources = {"/" + rel: (folder / rel).read_bytes() for rel in SOURCES if (folder / rel).is_file()}
    return from_sources(sources, feature_decl.load(folder))


def policy_problem(policy: dict[str, Any], product: Product, where: str) -> str | None:
    """Why a reviewed network policy is not this product's: written for another model (the reference's,
    left in place), or a MUD URL that is not the one the build announces."""
    if policy.get("model") != product.model:
        hint = " (the reference's policy)" if policy.get("model") == REFERENCE["MODEL"] else ""
        return (f"the reviewed network policy {where} is for model {policy.get('model')!r}{hint}, the firmware is "
                f"{product.model!r}: set SBD_NETWORK_POLICY to {product.model}'s own reviewed policy "
                "(docs/product.md)")
    stale = leftover(product, "MUD_BASE")
    if stale:
        return stale
    if product.mud_url and policy.get("mud_url") != product.mud_url:
        return (f"the reviewed network policy {where} gives mud_url {policy.get('mud_url')!r}, the firmware "
                f"announces {product.mud_url!r} (MUD_BASE in lib/sbd/network_policy.py + MODEL + .json)")
    return None


def declaration_problems(decl: Any) -> list[str]:
    """What is wrong with a features.json `product` object (absent is fine)."""
    if decl is None:
        return []
    if not isinstance(decl, dict):
        return ["'product' is not an object"]
    out = [f"product: unknown key {k!r} (known: {', '.join(DECLARATION_KEYS)})" for k in decl if k not in DECLARATION_KEYS]
    for key, kind in DECLARATION_KEYS.items():
        if key in decl and not isinstance(decl[key], kind):
            out.append(f"product.{key}: expected a {kind.__name__}")
    for ref, page in (decl.get("docs") or {}).items() if isinstance(decl.get("docs"), dict) else ():
        if page is not None and (not isinstance(page, str) or page.startswith("/") or ".." in PurePosixPath(page).parts
                                 or "://" in page):
            out.append(f"product.docs[{ref!r}]: {page!r} is not a page under the product's DOCS_URL")
    return out


def leftover(product: Product, key: str) -> str | None:
    """A sentence naming `key` when a product (not the reference) still has the reference's value for it."""
    if product.reference or product.value(key) != REFERENCE[key]:
        return None
    return (f"{key} in {REQUIRED[key]} is still the reference's value {REFERENCE[key]!r}: "
            f"{product.model} must set its own (docs/product.md)")


def support_leftover(product: Product, device_date: str | None, declared: str | None) -> str | None:
    """A sentence naming SUPPORT_UNTIL when a product's device still states the reference's end of support
    and its own support document says another date."""
    if device_date == REFERENCE["SUPPORT_UNTIL"] and declared != device_date:
        return leftover(product, "SUPPORT_UNTIL")
    return None


def docs_folder(product: Product, given: str | os.PathLike | None = None) -> Path | None:
    """Where the lab reads the documents the device points to: `--docs`, else SBD_DOCS_DIR, else, for the
    reference build only, the project's docs/. None for a product without its documents: the checks that
    read them are then inconclusive, never compared with the reference's."""
    chosen = given or os.environ.get("SBD_DOCS_DIR")
    if chosen:
        return Path(chosen)
    return REFERENCE_DOCS if product.reference else None


def no_docs_reason(product: Product) -> str:
    return (f"{product.model} is not the reference firmware, and its own documents were not given: run with "
            f"--docs DIR (the folder its DOCS_URL {product.docs_url} publishes); the reference's docs/ say "
            "nothing about this product")


# the coverage tables' documentation map ------------------------------------------------
def _slugs(path: Path) -> set[str]:
    from sbd_harness.reports.doc_coverage import heading_slug
    try:
        return {heading_slug(line.lstrip("#")) for line in path.read_text().splitlines() if line.startswith("#")}
    except OSError:
        return set()


def doc_maps(product: Product, folder: Path | None = None) -> tuple[dict, dict]:
    """(documentation coverage, documented limitations) for the report: the project's map for the reference;
    for a product, each of the reference's pages its `docs` maps, cited by the product's published address
    (DOCS_URL + its page), the section kept where its page in `folder` has it. Pages it does not map, and
    the project's own harness pages, are not cited."""
    from sbd_harness.reports.doc_coverage import DOC_COVERAGE, DOC_LIMITATIONS
    if product.reference:
        return DOC_COVERAGE, DOC_LIMITATIONS
    base = product.docs_url or ""

    def remap(refs: dict) -> dict:
        out: dict = {}
        for baseline, entries in refs.items():
            for pid, pages in entries.items():
                for page, what in pages:
                    path, _, anchor = page.partition("#")
                    mine = product.docs.get(path.removeprefix("docs/"))
                    if not mine:
                        continue
                    if anchor and (folder is None or anchor not in _slugs(folder / mine)):
                        anchor = ""
                    out.setdefault(baseline, {}).setdefault(pid, []).append(
                        (base + mine + (f"#{anchor}" if anchor else ""), what))
        return out

    return remap(DOC_COVERAGE), remap(DOC_LIMITATIONS)
