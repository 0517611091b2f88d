#!/usr/bin/env bash
# Scheduled retraining and revalidation with `repro`, the same logic for
# GitHub Actions, GitLab CI, cron or a shell: the workflow files beside this
# script only call it. Copy it into your repository (e.g. as
# ci/repro-ci.sh) and keep it next to the templates.
#
#   repro-ci.sh check      RECIPE                 did a floating input move since the lock?
#   repro-ci.sh build      RECIPE VERSION         build it under VERSION (a template, e.g. 1.1.0+data.{data})
#   repro-ci.sh publish    NAME@VERSION           push it to $REPRO_CI_REGISTRY, write its model card
#   repro-ci.sh verify     NAME@VERSION           pull it from $REPRO_CI_REGISTRY, rebuild it, push the attestation back
#   repro-ci.sh retrain    RECIPE VERSION         check, and when inputs moved: build, publish, verify
#                                                 independently in a store of its own, pull the attestation back
#   repro-ci.sh revalidate                        verify every production version; export the audit log
#
# Environment:
#   REPRO               the repro binary (default: `repro` on PATH)
#   REPRO_STORE         the store (keep it between runs: it holds the registry and the audit log)
#   REPRO_KEY           the signing key of this runner (the builder's, or the verifier's for `verify`)
#   REPRO_CI_REGISTRY   the OCI repository models are pushed to, `host[:port]/repo` (publish, verify, retrain)
#   REPRO_CI_INSECURE   `1`: talk plain HTTP to it (a registry on 127.0.0.1)
#   REPRO_CI_VERIFY_KEY the verifier's key for `retrain`'s independent verification (default: REPRO_KEY)
#   REPRO_CI_OUT        where summaries, cards and logs go (default: repro-ci-out)
#
# Outputs, in REPRO_CI_OUT: `summary.json` (what happened: one JSON document
# per run, the field `outcome` first), `outputs.env` (KEY=VALUE lines:
# changed, model, version; GitLab's dotenv report), the JSON of every repro
# command, `card/` and `audit.jsonl`. The same KEY=VALUE lines are appended
# to $GITHUB_OUTPUT when it is set.
#
# Exit codes: 0 done (also when nothing moved and nothing was built);
# 1 a build failed or a model does not reproduce; 2 wrong input (recipe,
# lock, arguments); 3 could not verify (tampering, a missing object, a
# registry that does not answer); anything else is repro's own code.
set -euo pipefail

repro=${REPRO:-repro}
out=${REPRO_CI_OUT:-repro-ci-out}
mkdir -p "$out"

log() { echo "[repro-ci] $*" >&2; }
die() {
    echo "error: $1" >&2
    [[ $# -gt 2 ]] && echo "hint: $3" >&2
    exit "${2:-2}"
}

# Append KEY=VALUE to the outputs.
output() {
    echo "$1=$2" >>"$out/outputs.env"
    if [[ -n "${GITHUB_OUTPUT:-}" ]]; then echo "$1=$2" >>"$GITHUB_OUTPUT"; fi
}

# Field $2 of the JSON document in file $1 (dots for nesting).
field() {
    python3 - "$1" "$2" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
for part in sys.argv[2].split("."):
    doc = doc[part] if isinstance(doc, dict) else doc[int(part)]
print(doc if not isinstance(doc, bool) else str(doc).lower())
PY
}

# Write summary.json from KEY=VALUE arguments (values are JSON when they parse).
summary() {
    python3 - "$out/summary.json" "$@" <<'PY'
import json, sys
doc = {}
for kv in sys.argv[2:]:
    k, v = kv.split("=", 1)
    try:
        doc[k] = json.loads(v)
    except ValueError:
        doc[k] = v
json.dump(doc, open(sys.argv[1], "w"), indent=2)
print(json.dumps(doc))
PY
}

registry_args() {
    [[ -n "${REPRO_CI_REGISTRY:-}" ]] || die "REPRO_CI_REGISTRY is not set" 2 "set it to the OCI repository models go to, host[:port]/repo"
    echo "$REPRO_CI_REGISTRY"
    if [[ "${REPRO_CI_INSECURE:-}" == 1 ]]; then echo --insecure; fi
}

# check RECIPE: prints changed=true|false; exit 0 either way.
cmd_check() {
    local recipe=$1 rc=0
    "$repro" lock --check --json "$recipe" >"$out/lock-check.json" || rc=$?
    case $rc in
        0) output changed false; log "no floating input of $recipe moved: nothing to build" ;;
        1) output changed true; log "inputs of $recipe moved:"; "$repro" lock --check "$recipe" >&2 || true ;;
        *) exit "$rc" ;;
    esac
}

# build RECIPE VERSION: prints model=NAME@VERSION and version=VERSION.
cmd_build() {
    local recipe=$1 version=$2
    "$repro" build --json --version "$version" "$recipe" >"$out/build.json"
    local what
    what=$(field "$out/build.json" model)
    output model "$what"
    output version "${what#*@}"
    log "built $what"
}

cmd_publish() {
    local what=$1
    mapfile -t reg < <(registry_args)
    "$repro" push "$what" --to "${reg[@]}"
    "$repro" card "$what" -o "$out/card"
    log "pushed $what to ${reg[0]}; its model card is in $out/card"
}

# verify NAME@VERSION: pull, rebuild with the cache off, push the attestation.
cmd_verify() {
    local what=$1 rc=0
    mapfile -t reg < <(registry_args)
    "$repro" pull "$what" --from "${reg[@]}"
    "$repro" verify --json "$what" >"$out/verify.json" || rc=$?
    # The attestation goes back whatever the verdict: a failed
    # reproduction is evidence too.
    if [[ $rc == 0 || $rc == 1 ]]; then
        "$repro" push "$what" --to "${reg[@]}"
    fi
    return "$rc"
}

cmd_retrain() {
    local recipe=$1 version=$2
    cmd_check "$recipe"
    if [[ "$(field "$out/lock-check.json" moved)" != true ]]; then
        summary outcome=unchanged recipe="$recipe" >/dev/null
        cat "$out/summary.json"
        return 0
    fi
    cmd_build "$recipe" "$version"
    local what
    what=$(grep '^model=' "$out/outputs.env" | tail -n 1 | cut -d= -f2-)
    cmd_publish "$what"
    # The independent rebuild: a store of its own that starts empty, with
    # the verifier's key; only the registry connects it to the build.
    local verifier rc=0
    verifier=$(mktemp -d "${TMPDIR:-/tmp}/repro-ci-verifier.XXXXXX")
    local key=${REPRO_CI_VERIFY_KEY:-${REPRO_KEY:-}}
    local env_args=(REPRO_STORE="$verifier" REPRO_CI_OUT="$out/verifier" GITHUB_OUTPUT=)
    if [[ -n "$key" ]]; then env_args+=(REPRO_KEY="$key"); fi
    env "${env_args[@]}" "$0" verify "$what" || rc=$?
    rm -rf "$verifier"
    # The verifier's attestation comes back into this store.
    mapfile -t reg < <(registry_args)
    "$repro" pull "$what" --from "${reg[@]}"
    local result=unknown
    if [[ -f "$out/verifier/verify.json" ]]; then
        case "$(field "$out/verifier/verify.json" reproduced)" in
            true) result=reproduced ;;
            false) result="not reproduced" ;;
        esac
    fi
    summary outcome=built recipe="$recipe" model="$what" verification="$result" \
        registry="${reg[0]}" card="$out/card/model-card.html" >/dev/null
    cat "$out/summary.json"
    return "$rc"
}

# Every production version, verified; the audit log exported. Exit 1 when
# any one does not reproduce.
cmd_revalidate() {
    local worst=0 rows=()
    "$repro" registry list --json >"$out/registry.json"
    mapfile -t prod < <(python3 - "$out/registry.json" <<'PY'
import json, sys
for row in json.load(open(sys.argv[1])):
    if row.get("stage") == "production":
        print(f"{row['name']}@{row['version']}")
PY
)
    for what in "${prod[@]}"; do
        local rc=0 file
        file="$out/verify-${what//[^A-Za-z0-9._-]/_}.json"
        "$repro" verify --json "$what" >"$file" || rc=$?
        case $rc in
            0) log "$what reproduces" ;;
            1) log "$what does NOT reproduce (see $file)" ;;
            *) log "$what could not be verified (exit $rc)" ;;
        esac
        rows+=("{\"model\": \"$what\", \"exit\": $rc}")
        if [[ $rc -gt $worst ]]; then worst=$rc; fi
    done
    "$repro" audit export --output "$out/audit.jsonl"
    local joined
    joined=$(IFS=,; echo "${rows[*]:-}")
    summary outcome="$([[ $worst == 0 ]] && echo reproduced || echo failed)" \
        production="[$joined]" audit="$out/audit.jsonl" >/dev/null
    cat "$out/summary.json"
    return "$worst"
}

cmd=${1:-}
shift || true
case "$cmd" in
    check) [[ $# == 1 ]] || die "usage: repro-ci.sh check RECIPE"; cmd_check "$@" ;;
    build) [[ $# == 2 ]] || die "usage: repro-ci.sh build RECIPE VERSION"; cmd_build "$@" ;;
    publish) [[ $# == 1 ]] || die "usage: repro-ci.sh publish NAME@VERSION"; cmd_publish "$@" ;;
    verify) [[ $# == 1 ]] || die "usage: repro-ci.sh verify NAME@VERSION"; cmd_verify "$@" ;;
    retrain) [[ $# == 2 ]] || die "usage: repro-ci.sh retrain RECIPE VERSION"; cmd_retrain "$@" ;;
    revalidate) [[ $# == 0 ]] || die "usage: repro-ci.sh revalidate"; cmd_revalidate ;;
    *) die "usage: repro-ci.sh check|build|publish|verify|retrain|revalidate ..." 2 "see the comment at the top of this script" ;;
esac
