#!/usr/bin/env python3
"""Wrap one uncompressed root filesystem layer into an OCI image layout tar.

Usage:
    oci_layout.py --layer rootfs.tar --out image.oci.tar \
        --created-epoch 1717200000 --ref-name debian-sklearn \
        [--env PATH=/usr/bin:/bin ...] [--created-by TEXT]

The output is a tar holding `oci-layout`, `index.json` and
`blobs/sha256/<hex>` (config, manifest, layer), following the OCI image
layout specification. Every byte is a function of the inputs: JSON is
compact with sorted keys, tar members are sorted, with mtime equal to
`--created-epoch`, owner 0:0 and mode 0644 (directories 0755).

Prints the manifest digest (`sha256:<hex>`) on stdout.
"""

import argparse
import datetime
import hashlib
import io
import json
import os
import sys
import tarfile

MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"


def canonical_json(value):
    """Compact JSON with sorted keys, UTF-8, no trailing newline."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8"
    )


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def descriptor(media_type, digest, size, annotations=None):
    d = {"mediaType": media_type, "digest": digest, "size": size}
    if annotations:
        d["annotations"] = annotations
    return d


def tar_info(name, size, mtime, is_dir=False):
    info = tarfile.TarInfo(name)
    info.size = 0 if is_dir else size
    info.mtime = mtime
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mode = 0o755 if is_dir else 0o644
    info.type = tarfile.DIRTYPE if is_dir else tarfile.REGTYPE
    return info


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layer", required=True, help="uncompressed layer tar")
    p.add_argument("--out", required=True, help="output OCI layout tar")
    p.add_argument("--created-epoch", required=True, type=int, help="SOURCE_DATE_EPOCH")
    p.add_argument("--ref-name", required=True, help="org.opencontainers.image.ref.name")
    p.add_argument("--env", action="append", default=[], help="KEY=VALUE for config.Env")
    p.add_argument("--created-by", default="", help="history entry text")
    args = p.parse_args(argv)

    for e in args.env:
        if "=" not in e:
            p.error(f"--env `{e}` is not KEY=VALUE")

    epoch = args.created_epoch
    created = datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )

    layer_digest = sha256_file(args.layer)
    layer_size = os.path.getsize(args.layer)

    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": created,
        "config": {"Env": list(args.env)},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        "history": [{"created": created, "created_by": args.created_by}],
    }
    config_bytes = canonical_json(config)
    config_digest = "sha256:" + hashlib.sha256(config_bytes).hexdigest()

    manifest = {
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": descriptor(MEDIA_CONFIG, config_digest, len(config_bytes)),
        "layers": [descriptor(MEDIA_LAYER, layer_digest, layer_size)],
    }
    manifest_bytes = canonical_json(manifest)
    manifest_digest = "sha256:" + hashlib.sha256(manifest_bytes).hexdigest()

    index = {
        "schemaVersion": 2,
        "mediaType": MEDIA_INDEX,
        "manifests": [
            descriptor(
                MEDIA_MANIFEST,
                manifest_digest,
                len(manifest_bytes),
                {"org.opencontainers.image.ref.name": args.ref_name},
            )
        ],
    }
    index_bytes = canonical_json(index)
    layout_bytes = canonical_json({"imageLayoutVersion": "1.0.0"})

    # (name, bytes or None for the layer file); sorted by name.
    members = {
        "blobs/": None,
        "blobs/sha256/": None,
        "blobs/sha256/" + config_digest.split(":", 1)[1]: config_bytes,
        "blobs/sha256/" + manifest_digest.split(":", 1)[1]: manifest_bytes,
        "blobs/sha256/" + layer_digest.split(":", 1)[1]: "layer",
        "index.json": index_bytes,
        "oci-layout": layout_bytes,
    }

    tmp = args.out + ".tmp"
    with open(tmp, "wb") as raw:
        with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for name in sorted(members):
                data = members[name]
                if data is None:
                    tar.addfile(tar_info(name, 0, epoch, is_dir=True))
                elif data == "layer":
                    with open(args.layer, "rb") as f:
                        tar.addfile(tar_info(name, layer_size, epoch), f)
                else:
                    tar.addfile(tar_info(name, len(data), epoch), io.BytesIO(data))
        raw.flush()
        os.fsync(raw.fileno())
    os.replace(tmp, args.out)

    print(manifest_digest)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
