#!/usr/bin/env python3
"""Check repro's records and attestations with the in-toto and SLSA
libraries others use, strictly.

Run by tests/tests/interop.rs with the Python of .ci-tools/venv (ci/setup
installs the pinned packages of ci/python-tools.txt there):

    check_attestations.py --public-key signing.key.pub \
        [--record RECORD.json] [--attestation ATTESTATION.json]

--public-key   the signer's public key as repro writes it (`<key>.pub`:
               64 hex digits, the raw 32-byte ed25519 key)
--record       a record as repro stores it (a DSSE envelope)
--attestation  a verification attestation as repro stores it

For each envelope: its DSSE signature must verify with securesystemslib
(the key converted to an SSlibKey under repro's key id, the SHA-256 of the
raw key), and must stop verifying when one byte of the payload changes.
The statement must parse under in_toto_attestation's Statement proto with
unknown fields refused, and validate. A record's predicate must be SLSA
provenance v1 and parse under the library's Provenance proto (strictly);
no resource descriptor in it may have a `uri` that is a path on the build
machine (no scheme, or `file:`). An attestation's predicate must be
`https://slsa.dev/verification_summary/v1` and parse under the library's
VerificationSummary proto (strictly); with --record too, its subjects must
be the record (first, under the record envelope's SHA-256) and every file
the record names, with the same digests.

Prints one `ok:` line per check passed; on the first failure prints
`FAILED: <why>` on stderr and exits 1.
"""

import argparse
import base64
import hashlib
import json
import sys
import urllib.parse

from google.protobuf import json_format
from in_toto_attestation.predicates.provenance.v1 import provenance_pb2
from in_toto_attestation.predicates.vsa.v1 import vsa_pb2
from in_toto_attestation.v1 import statement_pb2
from in_toto_attestation.v1.statement import Statement
from securesystemslib.dsse import Envelope
from securesystemslib.exceptions import VerificationError
from securesystemslib.signer import SSlibKey

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PROVENANCE_V1 = "https://slsa.dev/provenance/v1"
VSA_V1 = "https://slsa.dev/verification_summary/v1"
PAYLOAD_TYPE = "application/vnd.in-toto+json"


class Failed(Exception):
    pass


def ok(what):
    print(f"ok: {what}")


def load_key(path):
    """repro's `.pub` (64 hex digits) as a securesystemslib key."""
    with open(path, encoding="utf-8") as f:
        hex_key = f.read().strip()
    try:
        raw = bytes.fromhex(hex_key)
    except ValueError as e:
        raise Failed(f"{path}: not 64 hex digits: {e}") from e
    if len(raw) != 32:
        raise Failed(f"{path}: {len(raw)} bytes, not a 32-byte ed25519 key")
    keyid = "sha256:" + hashlib.sha256(raw).hexdigest()
    return SSlibKey(keyid, "ed25519", "ed25519", {"public": raw.hex()})


def open_envelope(path, key, what):
    """The verified statement (parsed JSON and proto) of a DSSE envelope."""
    with open(path, "rb") as f:
        raw = f.read()
    # from_dict takes the dictionaries apart: a fresh one each time.
    envelope = Envelope.from_dict(json.loads(raw))
    if envelope.payload_type != PAYLOAD_TYPE:
        raise Failed(f"{what}: payload type {envelope.payload_type!r}")
    try:
        envelope.verify([key], 1)
    except VerificationError as e:
        raise Failed(f"{what}: DSSE signature does not verify with key {key.keyid}: {e}") from e
    ok(f"{what}: DSSE signature verifies with securesystemslib (key {key.keyid})")

    # The check is real: a payload changed by one byte no longer verifies.
    forged = Envelope.from_dict(json.loads(raw))
    forged.payload = bytes([forged.payload[0] ^ 1]) + forged.payload[1:]
    try:
        forged.verify([key], 1)
    except VerificationError:
        ok(f"{what}: a payload changed by one byte does not verify")
    else:
        raise Failed(f"{what}: a forged payload verified")

    text = envelope.payload.decode("utf-8")
    try:
        pb = json_format.Parse(text, statement_pb2.Statement(), ignore_unknown_fields=False)
    except json_format.ParseError as e:
        raise Failed(f"{what}: the statement does not parse strictly: {e}") from e
    try:
        Statement.copy_from_pb(pb).validate()
    except ValueError as e:
        raise Failed(f"{what}: the statement is not valid: {e}") from e
    statement = json.loads(text)
    if statement["_type"] != STATEMENT_TYPE:
        raise Failed(f"{what}: statement type {statement['_type']!r}")
    ok(f"{what}: in-toto Statement v1 parses strictly and validates")
    return raw, statement


def parse_strictly(predicate, message, what):
    try:
        json_format.ParseDict(predicate, message, ignore_unknown_fields=False)
    except json_format.ParseError as e:
        raise Failed(f"{what}: the predicate does not parse strictly: {e}") from e
    return message


def check_uri(uri, where):
    """A URI that means the same elsewhere: not a path of the build machine."""
    scheme = urllib.parse.urlsplit(uri).scheme
    if not scheme:
        raise Failed(f"{where}: uri {uri!r} is a relative path, not a URI")
    if scheme == "file":
        raise Failed(f"{where}: uri {uri!r} is a path on the build machine")


def check_record(path, key):
    raw, st = open_envelope(path, key, "record")
    if st["predicateType"] != PROVENANCE_V1:
        raise Failed(f"record: predicate type {st['predicateType']!r}")
    parse_strictly(st["predicate"], provenance_pb2.Provenance(), "record")
    ok("record: SLSA provenance v1 parses strictly")
    pred = st["predicate"]
    descriptors = [("subject", d) for d in st["subject"]]
    descriptors += [
        ("resolvedDependencies", d) for d in pred["buildDefinition"].get("resolvedDependencies", [])
    ]
    descriptors += [("byproducts", d) for d in pred["runDetails"].get("byproducts", [])]
    builder = pred["runDetails"]["builder"]
    descriptors += [("builderDependencies", d) for d in builder.get("builderDependencies", [])]
    with_uri = 0
    for part, d in descriptors:
        if "uri" in d:
            check_uri(d["uri"], f"record: {part} `{d.get('name', '')}`")
            with_uri += 1
    ok(f"record: none of the {with_uri} resource URIs is a build machine's path")
    return raw, st


def check_attestation(path, key, record):
    _, st = open_envelope(path, key, "attestation")
    if st["predicateType"] != VSA_V1:
        raise Failed(f"attestation: predicate type {st['predicateType']!r}, not {VSA_V1}")
    vsa = parse_strictly(st["predicate"], vsa_pb2.VerificationSummary(), "attestation")
    ok("attestation: SLSA VSA v1 parses strictly")
    if vsa.verification_result not in ("PASSED", "FAILED"):
        raise Failed(f"attestation: verificationResult {vsa.verification_result!r}")
    if not vsa.verifier.id or not vsa.resource_uri or not vsa.policy.uri:
        raise Failed("attestation: verifier.id, resourceUri or policy.uri missing")
    for i in vsa.input_attestations:
        check_uri(i.uri, "attestation: inputAttestations")
    ok(f"attestation: {vsa.verification_result} by {vsa.verifier.id} of {vsa.resource_uri}")
    if record is None:
        return st
    raw, rec = record
    subjects = [(s["name"], dict(s["digest"])) for s in st["subject"]]
    want_record = hashlib.sha256(raw).hexdigest()
    if not subjects or subjects[0][1].get("sha256") != want_record:
        raise Failed(f"attestation: its first subject {subjects[:1]} is not the record sha256:{want_record}")
    if want_record not in [dict(i.digest).get("sha256") for i in vsa.input_attestations]:
        raise Failed("attestation: inputAttestations do not name the record")
    files = [(s["name"], dict(s["digest"])) for s in rec["subject"]]
    if not files:
        raise Failed("record: names no output file")
    missing = [f for f in files if f not in subjects[1:]]
    if missing:
        raise Failed(f"attestation: its subjects lack the record's files {missing}")
    ok(f"attestation: subjects are the record and its {len(files)} files: {[n for n, _ in files]}")
    return st


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--public-key", required=True)
    p.add_argument("--record")
    p.add_argument("--attestation")
    args = p.parse_args()
    try:
        key = load_key(args.public_key)
        record = check_record(args.record, key) if args.record else None
        if args.attestation:
            check_attestation(args.attestation, key, record)
    except Failed as e:
        print(f"FAILED: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
