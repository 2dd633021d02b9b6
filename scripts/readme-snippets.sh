#!/usr/bin/env bash
# Runs every ```sh block of README.md and of the guide (docs/*.md, by name), in order, each in a
# fresh bash with `set -euo pipefail`, from one scratch copy of the repository (so snippets that
# write files leave the checkout alone; a later block sees what an earlier one wrote).
#
# - A block whose first line is `# ci: skip (<reason>)` is skipped (it needs a real API, an
#   interactive client, or serves until stopped); the reason is printed.
# - A sluice on the built-in defaults (127.0.0.1:4080) runs meanwhile, as it would in the
#   reader's other terminal, for the blocks that talk to one.
# - SNIPPETS_SKIP=<regex> also skips the blocks matching it (for a quick local run, e.g.
#   SNIPPETS_SKIP='cargo install').
# - `sluice` is the binary built from this checkout (`cargo install --locked --path .` in
#   docs/install.md installs into a scratch CARGO_INSTALL_ROOT that is first on PATH).
# - SNIPPETS_FILES='README.md docs/usage.md' runs only the blocks of those files.
# - Port 4080 must be free.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

work=$(mktemp -d)
stop_server() {
  [ -n "${server:-}" ] || return 0
  kill "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
}
trap 'stop_server; rm -rf "$work"' EXIT
mkdir -p "$work/repo" "$work/install/bin" "$work/bin"
# The checkout without its build output; `target` is shared so nothing is rebuilt twice.
tar --exclude=./target --exclude=./.git --exclude=./state -cf - . | tar -C "$work/repo" -xf -
ln -s "$repo/target" "$work/repo/target"
export CARGO_INSTALL_ROOT="$work/install"
# Until the guide's own `cargo install` has run, `sluice` is this checkout's debug build.
export PATH="$work/install/bin:$work/bin:$PATH"
cargo build --quiet --bin sluice
ln -sf "$repo/target/debug/sluice" "$work/bin/sluice"

# The pages whose blocks run: README.md, then docs/*.md in name order.
if [ -n "${SNIPPETS_FILES:-}" ]; then
  read -r -a pages <<<"$SNIPPETS_FILES"
else
  pages=(README.md)
  for page in docs/*.md; do pages+=("$page"); done
fi

# Split the pages into numbered block files, named <order>-<page>:<line> (the page's `/` as `~`).
python3 - "$repo" "$work/blocks" "${pages[@]}" <<'PY'
import os, re, sys
repo, out, pages = sys.argv[1], sys.argv[2], sys.argv[3:]
os.makedirs(out)
n = 0
for page in pages:
    text = open(os.path.join(repo, page)).read()
    for m in re.finditer(r"^```sh\n(.*?)^```", text, re.S | re.M):
        line = text.count("\n", 0, m.start()) + 1
        with open(os.path.join(out, f"{n:03d}-{page.replace('/', '~')}:{line}.sh"), "w") as f:
            f.write(m.group(1))
        n += 1
PY

start_server() {
  if curl -s -o /dev/null http://127.0.0.1:4080/healthz 2>/dev/null; then
    echo "something already listens on 127.0.0.1:4080; stop it first" >&2
    return 1
  fi
  (cd "$work" && exec sluice --settings "$repo/settings/sluice.toml") 2>"$work/server.log" &
  server=$!
  for _ in $(seq 100); do
    curl -sf http://127.0.0.1:4080/healthz >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  cat "$work/server.log" >&2
  return 1
}

start_server
ran=0 skipped=0 failed=0
for block in "$work"/blocks/*.sh; do
  name=$(basename "$block" .sh)
  where=${name#*-}
  where=${where//\~//}
  first=$(head -1 "$block")
  if [[ $first =~ ^#\ ci:\ skip ]] || { [ -n "${SNIPPETS_SKIP:-}" ] && grep -qE "$SNIPPETS_SKIP" "$block"; }; then
    echo "skip  $where ${first#\# ci: skip }"
    skipped=$((skipped + 1))
    continue
  fi
  if (cd "$work/repo" && bash -euo pipefail "$block") >"$work/out" 2>&1; then
    echo "ok    $where"
    ran=$((ran + 1))
  else
    echo "FAIL  $where"
    sed 's/^/      /' "$work/out"
    failed=$((failed + 1))
  fi
done
echo "snippets of ${#pages[@]} pages: $ran ran, $skipped skipped, $failed failed"
[ "$failed" = 0 ]
