//! Importing OCI layouts and docker archives built by hand.

use std::fs;
use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;

use repro_store::image::{media_type, oci_manifest_bytes, Descriptor};
use repro_store::{BlobDigest, Hash, ImageDigest, Store};
use repro_toolchains::{import_archive, Error};

fn layer_tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        b.append_data(&mut h, name, *data).unwrap();
    }
    b.into_inner().unwrap()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn desc(mt: &str, bytes: &[u8]) -> Descriptor {
    Descriptor {
        media_type: mt.to_string(),
        digest: Hash::of(bytes),
        size: bytes.len() as u64,
        platform: None,
        annotations: None,
    }
}

fn config_json(diff_ids: &[Hash]) -> Vec<u8> {
    let ids: Vec<String> = diff_ids.iter().map(|h| h.to_string()).collect();
    serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": ids},
    }))
    .unwrap()
}

/// An image: a plain layer and a gzip layer, its config and OCI manifest.
struct Image {
    layers: Vec<(Vec<u8>, &'static str)>,
    config: Vec<u8>,
    manifest: Vec<u8>,
}

fn sample_image() -> Image {
    let l1 = layer_tar(&[
        ("etc/os-release", b"ID=test\n"),
        ("bin/hello", b"#!/bin/sh\necho hi\n"),
    ]);
    let l2_plain = layer_tar(&[("opt/model/weights.bin", &[7u8; 3000])]);
    let l2 = gzip(&l2_plain);
    let config = config_json(&[Hash::of(&l1), Hash::of(&l2_plain)]);
    let layers = vec![
        (l1, media_type::OCI_LAYER_TAR),
        (l2, media_type::OCI_LAYER_GZIP),
    ];
    let ldescs: Vec<Descriptor> = layers.iter().map(|(b, mt)| desc(mt, b)).collect();
    let manifest = oci_manifest_bytes(&desc(media_type::OCI_CONFIG, &config), &ldescs);
    Image {
        layers,
        config,
        manifest,
    }
}

fn write_blob(layout: &Path, bytes: &[u8]) {
    let p = layout.join("blobs/sha256").join(Hash::of(bytes).hex());
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, bytes).unwrap();
}

/// Write `img` as an OCI image layout directory whose index lists `index`.
fn write_oci_layout(dir: &Path, img: &Image, index: &serde_json::Value) {
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    write_blob(dir, &img.config);
    write_blob(dir, &img.manifest);
    for (l, _) in &img.layers {
        write_blob(dir, l);
    }
    fs::write(dir.join("index.json"), serde_json::to_vec(index).unwrap()).unwrap();
}

fn one_image_index(img: &Image) -> serde_json::Value {
    serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media_type::OCI_INDEX,
        "manifests": [{
            "mediaType": media_type::OCI_MANIFEST,
            "digest": Hash::of(&img.manifest).to_string(),
            "size": img.manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": "latest"},
        }],
    })
}

fn tar_dir(dir: &Path, out: &Path, gz: bool) {
    let mut b = tar::Builder::new(Vec::new());
    b.append_dir_all(".", dir).unwrap();
    let bytes = b.into_inner().unwrap();
    fs::write(out, if gz { gzip(&bytes) } else { bytes }).unwrap();
}

fn new_store(t: &tempfile::TempDir, name: &str) -> Store {
    Store::open(&t.path().join(name)).unwrap()
}

#[test]
fn oci_layout_as_dir_tar_and_gzipped_tar_give_the_same_digest() {
    let t = tempfile::tempdir().unwrap();
    let s = new_store(&t, "store");
    let img = sample_image();
    let layout = t.path().join("layout");
    write_oci_layout(&layout, &img, &one_image_index(&img));

    let d = import_archive(&s, &layout).unwrap();
    assert_eq!(d, ImageDigest::from_hash(Hash::of(&img.manifest)));
    assert_eq!(import_archive(&s, &layout).unwrap(), d, "importing twice");
    let info = s.get_image(&d).unwrap();
    assert_eq!(info.config, BlobDigest::from_hash(Hash::of(&img.config)));
    let types: Vec<&str> = info.layers.iter().map(|l| l.media_type.as_str()).collect();
    assert_eq!(
        types,
        [media_type::OCI_LAYER_TAR, media_type::OCI_LAYER_GZIP]
    );
    for l in &info.layers {
        s.verify_blob(&l.digest).unwrap();
    }

    for (name, gz) in [("layout.tar", false), ("layout.tar.gz", true)] {
        let s2 = new_store(&t, &format!("store-{name}"));
        let archive = t.path().join(name);
        tar_dir(&layout, &archive, gz);
        assert_eq!(import_archive(&s2, &archive).unwrap(), d, "{name}");
        assert_eq!(import_archive(&s2, &archive).unwrap(), d, "{name} twice");
        assert_eq!(s2.get_image(&d).unwrap(), info);
        assert_eq!(s2.list_images().unwrap(), [d]);
    }
}

#[test]
fn tampered_oci_layout_blob_is_refused_naming_it() {
    let t = tempfile::tempdir().unwrap();
    let img = sample_image();
    let layout = t.path().join("layout");
    write_oci_layout(&layout, &img, &one_image_index(&img));
    let layer = &img.layers[0].0;
    let mut tampered = layer.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 0xff;
    fs::write(
        layout.join("blobs/sha256").join(Hash::of(layer).hex()),
        &tampered,
    )
    .unwrap();
    let archive = t.path().join("layout.tar");
    tar_dir(&layout, &archive, false);

    for path in [&layout, &archive] {
        let s = new_store(
            &t,
            &format!("store-{}", path.file_name().unwrap().to_string_lossy()),
        );
        let err = import_archive(&s, path).unwrap_err();
        assert!(matches!(err, Error::BlobMismatch { .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.contains(&Hash::of(layer).to_string()), "{msg}");
        assert!(msg.contains(&Hash::of(&tampered).to_string()), "{msg}");
        assert!(s.list_images().unwrap().is_empty());
        assert!(
            !s.has_blob(&BlobDigest::from_hash(Hash::of(&tampered))),
            "bad bytes are not stored"
        );
    }
}

#[test]
fn index_must_name_exactly_one_image() {
    let t = tempfile::tempdir().unwrap();
    let s = new_store(&t, "store");
    let img = sample_image();
    let mut other = sample_image();
    other.config = config_json(&[Hash::of(&other.layers[0].0), Hash::of(b"")]);
    let ldescs: Vec<Descriptor> = other.layers.iter().map(|(b, mt)| desc(mt, b)).collect();
    other.manifest = oci_manifest_bytes(&desc(media_type::OCI_CONFIG, &other.config), &ldescs);
    let entry = |m: &[u8], arch: &str| {
        serde_json::json!({
            "mediaType": media_type::OCI_MANIFEST,
            "digest": Hash::of(m).to_string(),
            "size": m.len(),
            "platform": {"os": "linux", "architecture": arch},
        })
    };
    let layout = t.path().join("two");
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [entry(&img.manifest, "amd64"), entry(&other.manifest, "arm64")],
    });
    write_oci_layout(&layout, &img, &index);
    let err = import_archive(&s, &layout).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::NotExactlyOne { .. }), "{msg}");
    assert!(msg.contains(&Hash::of(&img.manifest).to_string()), "{msg}");
    assert!(
        msg.contains(&Hash::of(&other.manifest).to_string()),
        "{msg}"
    );
    assert!(msg.contains("linux/arm64"), "{msg}");

    let empty = t.path().join("empty");
    write_oci_layout(
        &empty,
        &img,
        &serde_json::json!({"schemaVersion": 2, "manifests": []}),
    );
    assert!(matches!(
        import_archive(&s, &empty),
        Err(Error::NotExactlyOne { .. })
    ));
}

#[test]
fn nested_index_with_an_attestation_resolves_to_the_image() {
    let t = tempfile::tempdir().unwrap();
    let s = new_store(&t, "store");
    let img = sample_image();
    let nested = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media_type::OCI_INDEX,
        "manifests": [
            {
                "mediaType": media_type::OCI_MANIFEST,
                "digest": Hash::of(&img.manifest).to_string(),
                "size": img.manifest.len(),
                "platform": {"os": "linux", "architecture": "amd64"},
            },
            {
                "mediaType": media_type::OCI_MANIFEST,
                "digest": Hash::of(b"attestation").to_string(),
                "size": 11,
                "platform": {"os": "unknown", "architecture": "unknown"},
                "annotations": {"vnd.docker.reference.type": "attestation-manifest"},
            },
        ],
    }))
    .unwrap();
    let layout = t.path().join("layout");
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": media_type::OCI_INDEX,
            "digest": Hash::of(&nested).to_string(),
            "size": nested.len(),
        }],
    });
    write_oci_layout(&layout, &img, &index);
    write_blob(&layout, &nested);
    assert_eq!(
        import_archive(&s, &layout).unwrap(),
        ImageDigest::from_hash(Hash::of(&img.manifest))
    );
}

/// Write a legacy `docker save` archive of `img` (Docker before 25):
/// `<id>/layer.tar` directories, the first layer repeated through a symlink.
fn write_docker_archive(out: &Path, img: &Image, config_name: &str) {
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, name, data).unwrap();
    };
    add(config_name, &img.config);
    let ids = ["1111", "2222"];
    for ((layer, _), id) in img.layers.iter().zip(ids) {
        add(&format!("{id}/VERSION"), b"1.0");
        add(&format!("{id}/json"), b"{}");
        add(&format!("{id}/layer.tar"), layer);
    }
    let mut layers: Vec<String> = ids.iter().map(|id| format!("{id}/layer.tar")).collect();
    layers.push("3333/layer.tar".into());
    let manifest = serde_json::to_vec(&serde_json::json!([{
        "Config": config_name,
        "RepoTags": ["example/model:1"],
        "Layers": layers,
    }]))
    .unwrap();
    add("manifest.json", &manifest);
    add("repositories", b"{}");
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    h.set_mode(0o777);
    b.append_link(&mut h, "3333/layer.tar", "../1111/layer.tar")
        .unwrap();
    fs::write(out, b.into_inner().unwrap()).unwrap();
}

/// `sample_image` with the first layer repeated on top, as docker sees it.
fn docker_image() -> Image {
    let mut img = sample_image();
    let l1 = img.layers[0].0.clone();
    let mut r = flate2::read::GzDecoder::new(&img.layers[1].0[..]);
    let mut l2_plain = Vec::new();
    r.read_to_end(&mut l2_plain).unwrap();
    img.config = config_json(&[Hash::of(&l1), Hash::of(&l2_plain), Hash::of(&l1)]);
    img
}

#[test]
fn docker_archive_import_keeps_the_config_and_is_deterministic() {
    let t = tempfile::tempdir().unwrap();
    let s = new_store(&t, "store");
    let img = docker_image();
    let archive = t.path().join("saved.tar");
    let config_name = format!("{}.json", Hash::of(&img.config).hex());
    write_docker_archive(&archive, &img, &config_name);

    let d = import_archive(&s, &archive).unwrap();
    assert_eq!(import_archive(&s, &archive).unwrap(), d, "importing twice");
    let s2 = new_store(&t, "store2");
    assert_eq!(import_archive(&s2, &archive).unwrap(), d, "another store");

    let info = s.get_image(&d).unwrap();
    assert_eq!(
        info.config,
        BlobDigest::from_hash(Hash::of(&img.config)),
        "image ID kept"
    );
    assert_eq!(s.read_blob(&info.config).unwrap(), img.config);
    let types: Vec<&str> = info.layers.iter().map(|l| l.media_type.as_str()).collect();
    assert_eq!(
        types,
        [
            media_type::OCI_LAYER_TAR,
            media_type::OCI_LAYER_GZIP,
            media_type::OCI_LAYER_TAR
        ]
    );
    assert_eq!(info.layers[0].digest, info.layers[2].digest);
    let manifest: serde_json::Value =
        serde_json::from_slice(&s.read_blob(&BlobDigest::from_hash(d.hash())).unwrap()).unwrap();
    assert_eq!(manifest["mediaType"], media_type::OCI_MANIFEST);
    assert_eq!(manifest["config"]["mediaType"], media_type::OCI_CONFIG);
}

#[test]
fn docker_archive_with_a_tampered_layer_or_config_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let s = new_store(&t, "store");
    let mut img = docker_image();
    let config_name = format!("{}.json", Hash::of(&img.config).hex());
    img.layers[0].0[600] ^= 1; // in the first file's block: still a valid tar
    let archive = t.path().join("saved.tar");
    write_docker_archive(&archive, &img, &config_name);
    let err = import_archive(&s, &archive).unwrap_err();
    assert!(err.to_string().contains("diff_id"), "{err}");

    let mut img = docker_image();
    let config_name = format!("{}.json", Hash::of(&img.config).hex());
    img.config.push(b' ');
    write_docker_archive(&archive, &img, &config_name);
    let err = import_archive(&s, &archive).unwrap_err();
    assert!(matches!(err, Error::BlobMismatch { .. }), "{err}");
    assert!(err.to_string().contains(&config_name[..64]), "{err}");
    assert!(s.list_images().unwrap().is_empty());
}

#[test]
fn docker_archive_written_by_the_store_imports_back_to_the_same_image() {
    let t = tempfile::tempdir().unwrap();
    let s = new_store(&t, "store");
    let img = sample_image();
    let layout = t.path().join("layout");
    write_oci_layout(&layout, &img, &one_image_index(&img));
    let d = import_archive(&s, &layout).unwrap();
    let archive = t.path().join("out.tar");
    s.write_docker_archive(&d, fs::File::create(&archive).unwrap())
        .unwrap();
    let s2 = new_store(&t, "store2");
    // The manifest used OCI media types and sniffable layers, so the
    // conversion reproduces it byte for byte.
    assert_eq!(import_archive(&s2, &archive).unwrap(), d);
    // The store's own `v1/` is an OCI image layout too.
    let s3 = new_store(&t, "store3");
    assert_eq!(import_archive(&s3, s.layout_dir()).unwrap(), d);
}

#[test]
fn other_files_are_not_images() {
    let t = tempfile::tempdir().unwrap();
    let s = new_store(&t, "store");
    let plain = t.path().join("plain.tar");
    fs::write(&plain, layer_tar(&[("hello.txt", b"hi")])).unwrap();
    assert!(matches!(
        import_archive(&s, &plain),
        Err(Error::NotAnImage { .. })
    ));
    let dir = t.path().join("dir");
    fs::create_dir(&dir).unwrap();
    assert!(matches!(
        import_archive(&s, &dir),
        Err(Error::NotAnImage { .. })
    ));
    // Files that are no tar at all, short or long, are not images either
    // (not damaged ones).
    for (name, bytes) in [
        ("junk", vec![0x42u8; 2000]),
        ("short.txt", b"junk\n".to_vec()),
    ] {
        let junk = t.path().join(name);
        fs::write(&junk, bytes).unwrap();
        let err = import_archive(&s, &junk).unwrap_err();
        assert!(matches!(err, Error::NotAnImage { .. }), "{err}");
        assert!(err.to_string().contains(name), "{err}");
    }
    // A tar cut short after its first entry is a damaged one.
    let cut = t.path().join("cut.tar");
    let mut bytes = layer_tar(&[("a", &[1u8; 600]), ("b", b"b")]);
    bytes.truncate(512 + 1024 + 100);
    fs::write(&cut, bytes).unwrap();
    let err = import_archive(&s, &cut).unwrap_err();
    assert!(matches!(err, Error::Invalid { .. }), "{err}");
    let err = import_archive(&s, &t.path().join("missing.tar")).unwrap_err();
    assert!(err.to_string().contains("missing.tar"), "{err}");
}

/// Runs `docker` and panics loudly if it fails (Docker must be reachable).
fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("needs Docker: cannot run `docker {}`: {e}", args.join(" ")));
    assert!(
        out.status.success(),
        "needs Docker: `docker {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Removes a Docker image on drop.
struct DockerImage(String);

impl Drop for DockerImage {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rmi", "--force", &self.0])
            .output();
    }
}

#[test]
#[ignore = "needs Docker: creates, saves and loads an image in the local engine"]
fn docker_save_import_and_load_keep_the_image_id() {
    let t = tempfile::tempdir().unwrap();
    let s = new_store(&t, "store");
    docker(&["version", "--format", "{{.Server.Version}}"]);

    // An image made locally (no registry): `docker import` of a rootfs tar.
    let rootfs = t.path().join("rootfs.tar");
    fs::write(&rootfs, layer_tar(&[("hello.txt", b"hello from repro\n")])).unwrap();
    let tag = format!("repro-test-import:{}", std::process::id());
    let id = docker(&["import", rootfs.to_str().unwrap(), &tag]);
    let _cleanup = DockerImage(id.clone());

    // docker save -> import_archive keeps the image ID as the config digest.
    let saved = t.path().join("saved.tar");
    docker(&["save", "-o", saved.to_str().unwrap(), &tag]);
    let d = import_archive(&s, &saved).unwrap();
    let info = s.get_image(&d).unwrap();
    assert_eq!(info.config.to_string(), id);

    // write_docker_archive -> docker load gives the same image ID again.
    docker(&["rmi", "--force", &tag]);
    let out = t.path().join("out.tar");
    s.write_docker_archive(&d, fs::File::create(&out).unwrap())
        .unwrap();
    let loaded = docker(&["load", "-i", out.to_str().unwrap()]);
    assert!(loaded.contains(&info.config.to_string()), "{loaded}");
    let inspected = docker(&[
        "image",
        "inspect",
        "--format",
        "{{.Id}}",
        &info.config.to_string(),
    ]);
    assert_eq!(inspected, info.config.to_string());
}
