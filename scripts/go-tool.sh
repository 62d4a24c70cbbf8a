# shellcheck shell=bash
# go_tool_install: the body of install-livekit.sh and install-pebble.sh,
# sourced by them. It builds one command of a Go module at a pinned version
# with `go install` through the Go module proxy (CGO_ENABLED=0) into a scratch
# GOBIN, checks the module version the binary records, and moves it into
# place with a stamp file; it does nothing while the binary is there and
# the stamp says this version built this way.
#
#   go_tool_install NAME MODULE CMD VERSION BIN_DIR TIMEOUT
#
# NAME is the installed file (and the log prefix install-NAME), CMD the
# command's package inside MODULE, BIN_DIR "" for $(go env GOPATH)/bin,
# TIMEOUT seconds for the whole go install.
go_tool_install() {
	local name=$1 module=$2 cmd=$3 version=$4 bin_dir=$5 timeout_secs=$6
	say() { echo "install-$name: $*" >&2; }
	die() {
		say "error: $*"
		exit 1
	}
	command -v go >/dev/null 2>&1 || die "go is not on PATH (Go 1.26 is needed to build $name)"
	if [ -z "$bin_dir" ]; then
		local gopath
		gopath="$(go env GOPATH)" || die "go env GOPATH failed"
		bin_dir="${gopath%%:*}/bin"
	fi
	local stamp_file="$bin_dir/.$name-version"
	local want_stamp="$module@$version cgo=0"
	if [ -x "$bin_dir/$name" ] && [ -f "$stamp_file" ] && [ "$(cat "$stamp_file")" = "$want_stamp" ]; then
		say "$name $version already installed in $bin_dir (nothing to do)"
		return 0
	fi
	say "installing $want_stamp into $bin_dir"
	mkdir -p "$bin_dir" || die "cannot create $bin_dir"
	# Build in a scratch directory and GOBIN (no go.mod around the caller
	# takes part), move into place only when it built.
	work="$(mktemp -d)"
	trap 'rm -rf "$work"' EXIT
	local start elapsed built got
	start=$(date +%s)
	if ! (cd "$work" && export CGO_ENABLED=0 GOBIN="$work/bin" &&
		timeout "$timeout_secs" go install "$module/$cmd@$version") >"$work/build.log" 2>&1; then
		cat "$work/build.log" >&2
		die "go install of $module $version failed or took over ${timeout_secs}s (needs the Go module proxy; see the log above)"
	fi
	elapsed=$(($(date +%s) - start))
	built="$work/bin/${cmd##*/}"
	got="$(go version -m "$built" | awk '$1 == "mod" { print $3 }')"
	[ "$got" = "$version" ] || die "built $name is $module '$got', want $version"
	rm -f "$stamp_file"
	mv -f "$built" "$bin_dir/$name" || die "cannot move $name into $bin_dir"
	echo "$want_stamp" >"$stamp_file"
	say "installed $name $version (CGO_ENABLED=0) into $bin_dir in ${elapsed}s"
}
