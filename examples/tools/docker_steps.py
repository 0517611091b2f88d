#!/usr/bin/env python3
"""Run a recipe's steps in Docker with the sandbox's contract, and check
that every output is byte-for-byte identical across runs.

This is a development aid for writing example recipes, not part of `repro`:
it imitates the `docker` backend closely enough (network off, read-only
root, inputs read-only at /repro/in/<name>, one writable /repro/out, private
/tmp as working directory and HOME, fixed hostname and uid, the documented
environment allowlist) to catch a nondeterministic step before the real
runner records it. It does no caching, locking or signing.

Usage:
    examples/tools/docker_steps.py RECIPE [--runs N] [--workdir DIR]

Needs a reachable Docker daemon and the toolchain archives named by the
recipe (`archive = ...`, an OCI layout tar with one layer). Exit status 0
when all runs agree, 1 when an output differs or a step fails.
"""

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import tomllib

THREAD_VARS = [
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
]
SANDBOX_UID = "65534:65534"
HOSTNAME = "repro"


def fail(message, hint=None):
    print(f"error: {message}", file=sys.stderr)
    if hint:
        print(f"hint: {hint}", file=sys.stderr)
    sys.exit(1)


def toml_scalar(value):
    """A parameter as TOML writes it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def substitute(text, params):
    def repl(m):
        if m.group(0) == "$$":
            return "$"
        name = m.group(1)
        if name not in params:
            fail(f"unknown parameter `{name}` in `{text}`")
        return toml_scalar(params[name])

    return re.sub(r"\$\$|\$\{params\.([A-Za-z0-9_-]+)\}", repl, text)


def image_from_archive(archive):
    """docker import the single layer of an OCI layout tar; return a tag
    and the image PATH from its config."""
    with tarfile.open(archive) as tar:
        index = json.load(tar.extractfile("index.json"))
        manifest_digest = index["manifests"][0]["digest"]
        blob = lambda d: "blobs/sha256/" + d.split(":", 1)[1]  # noqa: E731
        manifest = json.load(tar.extractfile(blob(manifest_digest)))
        config = json.load(tar.extractfile(blob(manifest["config"]["digest"])))
        if len(manifest["layers"]) != 1:
            fail(f"`{archive}` has {len(manifest['layers'])} layers; this tool handles one")
        tag = "repro-example/toolchain:" + manifest_digest.split(":", 1)[1][:16]
        env = dict(e.split("=", 1) for e in config.get("config", {}).get("Env", []))
        have = subprocess.run(["docker", "image", "inspect", tag], capture_output=True)
        if have.returncode != 0:
            with tempfile.TemporaryDirectory() as tmp:
                layer = tar.getmember(blob(manifest["layers"][0]["digest"]))
                tar.extract(layer, tmp, filter="data")
                subprocess.run(["docker", "import", os.path.join(tmp, layer.name), tag], check=True,
                               stdout=subprocess.DEVNULL)
    return tag, env.get("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")


def order_steps(steps):
    names = {s["name"] for s in steps}
    deps = {}
    for s in steps:
        d = set(s.get("needs", []))
        for ref in s.get("inputs", {}).values():
            if ref.startswith("steps."):
                d.add(ref.split(".", 1)[1])
        unknown = d - names
        if unknown:
            fail(f"step `{s['name']}` depends on unknown steps {sorted(unknown)}")
        deps[s["name"]] = d
    done, ordered = set(), []
    while len(ordered) < len(steps):
        ready = [s for s in steps if s["name"] not in done and deps[s["name"]] <= done]
        if not ready:
            fail("the steps form a cycle")
        ordered.append(ready[0])
        done.add(ready[0]["name"])
    return ordered


def run_recipe(recipe_path, workdir):
    recipe_dir = os.path.dirname(os.path.abspath(recipe_path))
    with open(recipe_path, "rb") as f:
        recipe = tomllib.load(f)
    build = recipe.get("build", {})
    params = recipe.get("params", {})
    images = {}
    for name, tc in recipe.get("toolchains", {}).items():
        if "archive" not in tc:
            fail(f"toolchain `{name}` has no `archive`; this tool only runs archives")
        archive = os.path.join(recipe_dir, tc["archive"])
        if not os.path.isfile(archive):
            fail(f"toolchain archive `{archive}` does not exist",
                 "build it first: examples/images/debian-sklearn/build")
        tag, path = image_from_archive(archive)
        images[name] = (tag, path, tc.get("env", {}))

    hashes = {}
    for step in order_steps(recipe["steps"]):
        tag, path, tc_env = images[step["toolchain"]]
        out = os.path.join(workdir, step["name"])
        os.makedirs(out)
        os.chmod(out, 0o777)
        env = {
            "PATH": path,
            "HOME": "/tmp",
            "TZ": "UTC",
            "LC_ALL": "C.UTF-8",
            "LANG": "C.UTF-8",
            "SOURCE_DATE_EPOCH": str(build.get("source_date_epoch", 0)),
            "PYTHONHASHSEED": str(build.get("python_hash_seed", 0)),
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        env.update({v: str(build.get("threads", 1)) for v in THREAD_VARS})
        env.update(tc_env)
        env.update({k: substitute(v, params) for k, v in step.get("env", {}).items()})
        cmd = ["docker", "run", "--rm", "--network", "none", "--read-only",
               "--tmpfs", "/tmp:rw,exec,mode=1777", "--workdir", "/tmp", "--hostname", HOSTNAME,
               "--user", SANDBOX_UID, "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
               "--env-file", "/dev/null", "-v", f"{out}:/repro/out:rw"]
        for name, ref in sorted(step.get("inputs", {}).items()):
            kind, _, key = ref.partition(".")
            if kind == "steps":
                src = os.path.join(workdir, key)
            else:
                entry = recipe[kind][key]
                if "path" not in entry:
                    fail(f"`{ref}` is pinned by digest; this tool only runs folders")
                src = os.path.join(recipe_dir, entry["path"])
            cmd += ["-v", f"{os.path.abspath(src)}:/repro/in/{name}:ro"]
        for k, v in sorted(env.items()):
            cmd += ["-e", f"{k}={v}"]
        cmd += [tag] + [substitute(a, params) for a in step["argv"]]
        print(f"  step `{step['name']}`", file=sys.stderr)
        proc = subprocess.run(cmd)
        if proc.returncode != 0:
            fail(f"step `{step['name']}` exited with status {proc.returncode}")
        declared = {o.rstrip("/") for o in step["outputs"]}
        present = set(os.listdir(out))
        if present != declared:
            fail(f"step `{step['name']}` produced {sorted(present)}, declared {sorted(declared)}")
        for root, _, files in os.walk(out):
            for f in sorted(files):
                p = os.path.join(root, f)
                with open(p, "rb") as fh:
                    hashes[os.path.relpath(p, workdir)] = hashlib.sha256(fh.read()).hexdigest()
    return hashes


def main(argv):
    p = argparse.ArgumentParser(description="run a recipe's steps in Docker and compare runs")
    p.add_argument("recipe")
    p.add_argument("--runs", type=int, default=2)
    p.add_argument("--workdir", help="keep outputs here (default: a temporary directory)")
    args = p.parse_args(argv)

    base = args.workdir or tempfile.mkdtemp(prefix="repro-docker-steps.")
    results = []
    for i in range(args.runs):
        print(f"run {i + 1} of {args.runs}", file=sys.stderr)
        results.append(run_recipe(args.recipe, os.path.join(base, f"run{i + 1}")))
    differing = sorted(k for k in results[0] if any(r.get(k) != results[0][k] for r in results[1:]))
    for name in sorted(results[0]):
        mark = "DIFFERS" if name in differing else "same"
        print(f"{results[0][name]}  {name}  {mark}")
    print(f"outputs in {base}", file=sys.stderr)
    if differing:
        print(f"error: {len(differing)} outputs differ between runs: {differing}", file=sys.stderr)
        return 1
    print(f"all {len(results[0])} outputs identical across {args.runs} runs", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
