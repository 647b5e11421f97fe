#!/usr/bin/env bash
# Builds what the e2e runs, from the Go module proxy only, into a cache outside the repository.
#
#   build.sh engine      the Pulumi CLI, the Python language host and the plugins: kubernetes (from the
#                        module proxy), command and random (from ../shared/third_party/go)
#                        and esc-project (ESC's evaluator, tests/e2e/engine/esc)
#   build.sh apiserver   kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, etcd and kwok
#   build.sh --bin-dir   prints the directory the e2e puts first on PATH (builds nothing)
#   build.sh promtool    Prometheus's promtool, for `make test`'s alert rule unit tests
#   build.sh --promtool  prints the path of the promtool binary (builds nothing)
#
# pulumi-command, pulumi-random and the Python language host are not served by the module proxy: their
# upstream archives in ../shared/third_party/go are checked against its SHA256SUMS, unpacked into the
# cache (never edited), and built with every dependency from the module proxy.
# Each component lands in $CACHE/<component>-<key>/bin, the key a hash of everything that goes into
# it (versions.env, its wrapper go.mod/go.sum/tools.go, this script, the Go version), so a warm cache
# costs seconds and a changed pin rebuilds only what it touches. $CACHE/e2e-<key>/bin links them all
# (a root/bin layout, as pulumi.automation.PulumiCommand(root=...) expects).
# The versions are in versions.env; each wrapper go.mod is checked against it before building.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
. "$HERE/versions.env"
CACHE=${SOPHIA_ENGINE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sophia-infra/engine}
GO=${GO:-go}
THIRD_PARTY=${SOPHIA_THIRD_PARTY:-$(cd "$HERE/../../../.." && pwd)/shared/third_party}
# Two cores are shared with other work: builds yield to it.
NICE=(nice -n 10)

# Only the module proxy: a `direct` fallback would fetch from version control hosts.
proxy=$("$GO" env GOPROXY)
proxy=${proxy%,direct}
proxy=${proxy%|direct}
if [[ -z $proxy || $proxy == direct || $proxy == off ]]; then
    echo "build.sh: GOPROXY must name a module proxy (it is '$("$GO" env GOPROXY)')" >&2
    exit 2
fi
export GOPROXY=$proxy
# The wrappers' go.sum files are the pin: never rewrite them, never pick another toolchain. No VCS
# stamp: a binary is identified by its module version, not by this repository's commit.
export GOFLAGS="${GOFLAGS:+$GOFLAGS }-mod=readonly -buildvcs=false"
export GOTOOLCHAIN=local

# Every component, in the order `make e2e` builds them.
ALL=(cli python kubernetes command random esc apiserver etcd kwok)

say() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*"; }

key() { # key COMPONENT: what goes into it, hashed
    local component=$1
    {
        echo "$component"
        cat "$HERE/versions.env" "$HERE/build.sh"
        cat "$HERE/$component"/go.* "$HERE/$component"/tools.go 2>/dev/null || true
        # A wrapper with its own command (esc/main.go): its source goes into the key too.
        cat "$HERE/$component"/main.go 2>/dev/null || true
        archive_sha "$component"
        "$GO" version
        "$GO" env GOOS GOARCH CGO_ENABLED
    } | sha256sum | cut -c1-16
}

# The third-party archive a component builds from (versions.env: <COMPONENT>_ARCHIVE), if any.
archive_of() {
    local var
    var="$(tr '[:lower:]' '[:upper:]' <<<"$1")_ARCHIVE"
    echo "${!var:-}"
}

archive_sha() { # the archive's sha256 as SHA256SUMS pins it (nothing for a module-proxy component)
    local archive
    archive=$(archive_of "$1")
    [[ -n $archive ]] || return 0
    awk -v f="$archive" '$2 == f { print $1 }' "$THIRD_PARTY/SHA256SUMS"
}

unpack() { # unpack COMPONENT: its archive, checked, into a fresh directory of the cache; prints the path
    local archive want src
    archive=$(archive_of "$1")
    want=$(archive_sha "$1")
    if [[ -z $want ]]; then
        echo "build.sh: $archive is not in $THIRD_PARTY/SHA256SUMS" >&2
        exit 2
    fi
    if ! (cd "$THIRD_PARTY" && sha256sum --quiet -c <(grep -F "  $archive" SHA256SUMS)) >&2; then
        echo "build.sh: $THIRD_PARTY/$archive does not match its sha256 in SHA256SUMS" >&2
        exit 2
    fi
    src=$CACHE/src/$1-${want:0:16}
    rm -rf "$src"
    mkdir -p "$src"
    tar -xzf "$THIRD_PARTY/$archive" -C "$src" --strip-components=1
    chmod -R u+w "$src"
    echo "$src"
}

download() { # download MODULE@VERSION FIELD: a field of `go mod download -json`, outside any module
    local empty
    empty=$(mktemp -d)
    (cd "$empty" && GOFLAGS='' "$GO" mod download -json "$1") | sed -n "s/^[[:space:]]*\"$2\": \"\(.*\)\",\$/\1/p"
    rmdir "$empty"
}

component_dir() { echo "$CACHE/$1-$(key "$1")"; }

bin_dir() {
    local all
    all=$(for c in cli kubernetes apiserver etcd kwok; do key "$c"; done | sha256sum | cut -c1-16)
    echo "$CACHE/e2e-$all/bin"
}

link_all() { # every built component's binaries into the one bin directory
    local bin c
    bin=$(bin_dir)
    mkdir -p "$bin"
    for c in "${ALL[@]}"; do
        local dir
        dir=$(component_dir "$c")
        [[ -f $dir/ok ]] || continue
        for f in "$dir"/bin/*; do ln -sfn "$f" "$bin/$(basename "$f")"; done
    done
}

requires() { # requires WRAPPER MODULE VERSION: the wrapper builds exactly that version
    local got
    got=$(cd "$HERE/$1" && "$GO" list -m -f '{{.Version}}' "$2")
    if [[ $got != "$3" ]]; then
        echo "build.sh: $1/go.mod has $2 $got, versions.env says $3" >&2
        exit 2
    fi
}

build() { # build COMPONENT: skipped when its keyed directory is complete
    local component=$1 dir start
    dir=$(component_dir "$component")
    if [[ -f $dir/ok ]]; then
        say "$component: cached in $dir"
        return
    fi
    say "$component: building into $dir"
    start=$SECONDS
    rm -rf "$dir"
    mkdir -p "$dir/bin"
    "build_$component" "$dir"
    touch "$dir/ok"
    say "$component: built in $((SECONDS - start)) s"
}

build_cli() {
    requires cli "$PULUMI_CLI_MODULE" "$PULUMI_CLI_VERSION"
    say "cli: $PULUMI_CLI_PACKAGE@$PULUMI_CLI_VERSION"
    (cd "$HERE/cli" && "${NICE[@]}" "$GO" build -o "$1/bin/pulumi" \
        -ldflags "-X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=$PULUMI_CLI_VERSION" \
        "$PULUMI_CLI_PACKAGE")
}

build_kubernetes() {
    # One source path per version, whatever the key: the Go build cache keys compiled packages by
    # their directory too, so a new key (this script edited, say) relinks instead of recompiling.
    local src=$CACHE/src/kubernetes-$KUBERNETES_PROVIDER_VERSION module_dir version=${KUBERNETES_PROVIDER_VERSION#v}
    rm -rf "$src"
    requires kubernetes "$KUBERNETES_PROVIDER_MODULE" "$KUBERNETES_PROVIDER_VERSION"
    # The command go:embeds files that the module's own generate step writes, so build a writable
    # copy of the module (the wrapper's replace line points at it), generated by its own generate.go.
    mkdir -p "$src"
    cp "$HERE/kubernetes/go.mod" "$HERE/kubernetes/go.sum" "$HERE/kubernetes/tools.go" "$src/"
    module_dir=$(download "$KUBERNETES_PROVIDER_MODULE@$KUBERNETES_PROVIDER_VERSION" Dir)
    [[ -d $module_dir ]] || { echo "build.sh: no module directory for $KUBERNETES_PROVIDER_MODULE" >&2; exit 1; }
    cp -r "$module_dir" "$src/provider"
    chmod -R u+w "$src/provider"
    say "kubernetes: generating the embedded schema with the module's generate.go"
    (cd "$src" && "${NICE[@]}" "$GO" build -o "$src/generate" ./provider/cmd/pulumi-resource-kubernetes/generate.go)
    (cd "$src/provider/cmd/pulumi-resource-kubernetes" && VERSION=$version "$src/generate")
    say "kubernetes: $KUBERNETES_PROVIDER_PACKAGE@$KUBERNETES_PROVIDER_VERSION"
    (cd "$src" && "${NICE[@]}" "$GO" build -o "$1/bin/pulumi-resource-kubernetes" \
        -ldflags "-X github.com/pulumi/pulumi-kubernetes/provider/v4/pkg/version.Version=$version" \
        "$KUBERNETES_PROVIDER_PACKAGE")
}

build_apiserver() {
    local gomod want got
    requires apiserver "$KUBERNETES_MODULE" "$KUBERNETES_VERSION"
    # The wrapper's replace lines must be exactly k8s.io/kubernetes's own, at the published versions.
    gomod=$(download "$KUBERNETES_MODULE@$KUBERNETES_VERSION" GoMod)
    want=$(awk -v v="$KUBERNETES_STAGING_VERSION" '$2 == "=>" && $3 ~ /^\.\/staging\// {print $1 " " v}' "$gomod" | sort)
    got=$(cd "$HERE/apiserver" && "$GO" mod edit -json |
        python3 -c 'import json,sys; [print(r["Old"]["Path"], r["New"].get("Version", r["New"]["Path"])) for r in json.load(sys.stdin)["Replace"]]' |
        sort)
    if [[ $want != "$got" ]]; then
        echo "build.sh: apiserver/go.mod's replace lines differ from $KUBERNETES_MODULE@$KUBERNETES_VERSION's:" >&2
        diff <(echo "$want") <(echo "$got") >&2 || true
        exit 2
    fi
    local minor=${KUBERNETES_VERSION#v1.}
    minor=${minor%%.*}
    local ldflags="-X k8s.io/component-base/version.gitVersion=$KUBERNETES_VERSION"
    ldflags+=" -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
    ldflags+=" -X k8s.io/component-base/version.gitTreeState=clean"
    say "apiserver: $KUBERNETES_MODULE/cmd/kube-apiserver, kube-controller-manager, kube-scheduler and kubectl@$KUBERNETES_VERSION"
    (cd "$HERE/apiserver" && "${NICE[@]}" "$GO" build -o "$1/bin/" -ldflags "$ldflags" \
        "$KUBERNETES_MODULE/cmd/kube-apiserver" "$KUBERNETES_MODULE/cmd/kube-controller-manager" \
        "$KUBERNETES_MODULE/cmd/kube-scheduler" "$KUBERNETES_MODULE/cmd/kubectl")
}

build_command() {
    local src
    src=$(unpack command)
    say "command: pulumi-command provider $COMMAND_VERSION ($COMMAND_COMMIT) from $(archive_of command)"
    (cd "$src/provider" && "${NICE[@]}" "$GO" build -o "$1/bin/pulumi-resource-command" \
        -ldflags "-X github.com/pulumi/pulumi-command/provider/pkg/version.Version=${COMMAND_VERSION#v}" \
        ./cmd/pulumi-resource-command)
}

build_random() {
    local src version=${RANDOM_VERSION#v}
    src=$(unpack random)
    say "random: pulumi-random provider $RANDOM_VERSION ($RANDOM_COMMIT) from $(archive_of random)"
    # The command go:embeds the schema that its own generate.go writes (SOURCES.md's build line).
    (cd "$src/provider/cmd/pulumi-resource-random" && VERSION=$version "${NICE[@]}" "$GO" run generate.go)
    (cd "$src/provider" && "${NICE[@]}" "$GO" build -o "$1/bin/pulumi-resource-random" \
        -ldflags "-X github.com/pulumi/pulumi-random/provider/v4/pkg/version.Version=$version" \
        ./cmd/pulumi-resource-random)
}

build_python() {
    local src dir=$CACHE/src/python-build
    requires python "$PYTHON_HOST_SDK_MODULE" "$PYTHON_HOST_VERSION"
    src=$(unpack python)
    # Upstream's go.mod replaces pkg/v3 and sdk/v3 with the monorepo's own folders; the wrapper
    # go.mod (python/) requires both at the language host's version from the module proxy instead.
    rm -rf "$dir"
    mkdir -p "$dir"
    cp "$src/sdk/python/cmd/pulumi-language-python/main.go" "$HERE/python/go.mod" "$HERE/python/go.sum" "$dir/"
    say "python: pulumi-language-python $PYTHON_HOST_VERSION ($PYTHON_HOST_COMMIT) from $(archive_of python)"
    (cd "$dir" && "${NICE[@]}" "$GO" build -o "$1/bin/pulumi-language-python" \
        -ldflags "-X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=$PYTHON_HOST_VERSION" .)
    # The host runs a program through this script, which must sit beside it (as in Pulumi's releases).
    install -m 0755 "$src/sdk/python/cmd/pulumi-language-python-exec" "$1/bin/pulumi-language-python-exec"
}

build_esc() {
    # The wrapper's own command: ESC's evaluator and the CLI's projection of `pulumiConfig`, at the
    # versions the CLI and versions.env pin.
    requires esc "$ESC_MODULE" "$ESC_VERSION"
    requires esc "$PULUMI_CLI_MODULE" "$PULUMI_CLI_VERSION"
    say "esc: esc-project on $ESC_MODULE@$ESC_VERSION and $PULUMI_CLI_MODULE@$PULUMI_CLI_VERSION"
    (cd "$HERE/esc" && "${NICE[@]}" "$GO" build -o "$1/bin/esc-project" .)
}

build_etcd() {
    requires etcd "$ETCD_MODULE" "$ETCD_VERSION"
    say "etcd: $ETCD_MODULE@$ETCD_VERSION"
    (cd "$HERE/etcd" && "${NICE[@]}" "$GO" build -o "$1/bin/etcd" "$ETCD_MODULE")
}

build_promtool() {
    requires promtool "$PROMETHEUS_MODULE" "$PROMETHEUS_VERSION"
    say "promtool: $PROMETHEUS_PACKAGE@$PROMETHEUS_VERSION (Prometheus $PROMETHEUS_RELEASE)"
    (cd "$HERE/promtool" && "${NICE[@]}" "$GO" build -o "$1/bin/promtool" \
        -ldflags "-X github.com/prometheus/common/version.Version=${PROMETHEUS_RELEASE#v}" \
        "$PROMETHEUS_PACKAGE")
}

build_kwok() {
    local module_dir stage
    requires kwok "$KWOK_MODULE" "$KWOK_VERSION"
    say "kwok: $KWOK_PACKAGE@$KWOK_VERSION"
    (cd "$HERE/kwok" && "${NICE[@]}" "$GO" build -o "$1/bin/kwok" "$KWOK_PACKAGE")
    # kwok exits "no stages found" without stages: the ones its module ships, beside the binary (in the
    # cache, never in the repository), read by tests/e2e/kwok.py.
    module_dir=$(download "$KWOK_MODULE@$KWOK_VERSION" Dir)
    mkdir -p "$1/stages"
    for stage in $KWOK_STAGES; do
        [[ -f $module_dir/$stage ]] || { echo "build.sh: $KWOK_MODULE@$KWOK_VERSION has no $stage" >&2; exit 1; }
        cp "$module_dir/$stage" "$1/stages/"
    done
    chmod u+w "$1"/stages/*
}

case ${1:-} in
--bin-dir)
    bin_dir
    exit 0
    ;;
--promtool)
    echo "$(component_dir promtool)/bin/promtool"
    exit 0
    ;;
promtool) components=(promtool) ;;
engine) components=(cli python kubernetes command random esc) ;;
apiserver) components=(apiserver etcd kwok) ;;
all) components=("${ALL[@]}") ;;
*)
    echo "usage: build.sh engine|apiserver|all|--bin-dir" >&2
    exit 2
    ;;
esac

mkdir -p "$CACHE"
# One build at a time on this machine (two cores, shared): a second `make e2e` waits here.
exec 9>"$CACHE/.lock"
flock 9
started=$SECONDS
for c in "${components[@]}"; do build "$c"; done
link_all
say "${1}: ready in $((SECONDS - started)) s; binaries in $(bin_dir)"
