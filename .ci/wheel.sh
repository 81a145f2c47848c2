#!/usr/bin/env bash
# What users install is what works: build the sdist and wheel, check them, install the wheel (not the
# checkout) into fresh virtualenvs, with the runtime dependencies only and then with each extra, and
# run every command once on a tiny bundle. Any failure fails CI.
#   .ci/wheel.sh BUNDLE WORK     (BUNDLE: a tiny bundle with fp32, int8, int8-vnni and fp32-portable graphs)
set -euo pipefail
BUNDLE=$(realpath "$1") WORK=$(realpath -m "$2")
SRC=$(cd "$(dirname "$0")/.." && pwd)
rm -rf "$WORK" && mkdir -p "$WORK/dist" "$WORK/data/photos"
cd "$WORK"
step() { echo "wheel: $*"; }
run() { echo "  \$ $*"; "$@" >"$WORK/last.log" 2>&1 || { cat "$WORK/last.log"; echo "FAILED: $*"; exit 1; }; }
# expect CODE CMD...: the command must exit with CODE (bad input is an exit code and one line, never a traceback)
expect() {
    local code=$1; shift; echo "  \$ $* (expects exit $code)"
    set +e; "$@" >"$WORK/last.log" 2>&1; local got=$?; set -e
    if [ "$got" != "$code" ] || grep -q "^Traceback" "$WORK/last.log"; then cat "$WORK/last.log"; echo "FAILED: exit $got"; exit 1; fi
}

step "build and check the sdist and the wheel"
run python -m build --outdir "$WORK/dist" "$SRC"
run python -m twine check --strict "$WORK"/dist/*
WHEEL=$(ls "$WORK"/dist/edgeclip-*.whl)
# Every tracked file of the two packages is in the wheel (a hand-kept package list once left one out).
python - "$WHEEL" "$SRC" <<'PY'
import subprocess, sys, zipfile
wheel, src = sys.argv[1:]
tracked = subprocess.run(["git", "-C", src, "ls-files", "edgeclip", "converters"], capture_output=True, text=True, check=True).stdout.split()
missing = sorted(set(tracked) - set(zipfile.ZipFile(wheel).namelist()))
sys.exit(f"the wheel lacks {missing}" if missing else print(f"  the wheel holds all {len(tracked)} tracked files of edgeclip/ and converters/"))
PY

# Small inputs: texts, two photos, a document.
printf 'a seal on a rock\nuna foca en una roca\n' >data/texts.txt
python -c "
from PIL import Image
Image.new('RGB', (64, 48), (200, 120, 40)).save('data/photos/a.jpg'); Image.new('RGB', (40, 90), (20, 80, 200)).save('data/photos/b.png')"
echo "The seal sleeps on the rock." >data/photos/note.md

venv() {  # venv NAME [EXTRA]: a fresh virtualenv with the wheel (and one extra) installed
    python -m venv "$WORK/venv-$1"
    "$WORK/venv-$1/bin/python" -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
    if [ "${2:-}" = convert ]; then  # torch pinned first: never a CUDA build
        "$WORK/venv-$1/bin/python" -m pip install -q torch==2.13.0 2>&1 | grep -v "^WARNING: Location" || true
    fi
    "$WORK/venv-$1/bin/python" -m pip install -q "$WHEEL${2:+[$2]}" 2>&1 | grep -v "^WARNING: Location" || true
    export PATH="$WORK/venv-$1/bin:$ORIGINAL_PATH"
    hash -r
    [ "$(command -v edgeclip)" = "$WORK/venv-$1/bin/edgeclip" ]
}
ORIGINAL_PATH=$PATH
B=$BUNDLE D=$WORK/data O=$WORK/out
mkdir -p "$O"

step "runtime only: pip install edgeclip"
venv core
run python -c "import edgeclip, os, sys; assert 'torch' not in sys.modules and os.environ['ORT_DISABLE_TELEMETRY'] == '1'"
run edgeclip --version
run edgeclip info "$B"
run edgeclip info "$B" --json
run edgeclip verify "$B"
run edgeclip embed "$B" --text-file "$D/texts.txt" --image-dir "$D/photos" --out "$O/emb.jsonl"
run edgeclip embed "$B" --text-file "$D/texts.txt" --dim 64 --out "$O/emb.npy"
run edgeclip embed "$B" --text "to stdout" --out -
expect 2 edgeclip embed "$B" --text "needs pyarrow" --out "$O/emb.parquet"
run edgeclip bench "$B" --seconds 0.05 --min-reps 1 --tokens 8 --batch 1 --json "$O/bench.json"
run edgeclip pull --help
run edgeclip index "$O/photos.db" "$D/photos" --bundle "$B"
run edgeclip search "$O/photos.db" "a seal on a rock" -k 2 --json
expect 2 edgeclip export "$O/photos.db" --to lancedb --out "$O/photos.lance"  # without lancedb: one line naming it
expect 2 edgeclip serve "$B"  # without the server extra: one line naming it
expect 2 edgeclip embed "$B" --text x --out "$O/ray/" --engine ray

step "extra: parquet"
venv parquet parquet
run edgeclip embed "$B" --text-file "$D/texts.txt" --out "$O/emb.parquet"
run python -c "import pyarrow.parquet as pq; assert pq.read_table('$O/emb.parquet').num_rows == 2"
run edgeclip export "$O/photos.db" --to parquet --out "$O/photos.parquet"

step "extra: server (one request, and /docs without the internet)"
venv server server
PORT=$(python -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
edgeclip serve "$B" --port "$PORT" >"$O/serve.log" 2>&1 &
SERVER=$!
python - "$PORT" <<'PY' || { cat "$O/serve.log"; kill $SERVER; exit 1; }
import json, sys, time, urllib.request
base = f"http://127.0.0.1:{sys.argv[1]}"
for _ in range(300):
    try:
        if urllib.request.urlopen(base + "/ready").status == 200: break
    except OSError: time.sleep(0.1)
request = urllib.request.Request(base + "/v1/embeddings", json.dumps({"model": "jina-clip-v2", "input": ["a seal"]}).encode(),
                                 {"content-type": "application/json"})
answer = json.load(urllib.request.urlopen(request))
assert len(answer["data"]) == 1 and answer["data"][0]["embedding"], answer
page = urllib.request.urlopen(base + "/docs").read().decode()
assert "swagger-ui-bundle.js" in page and "cdn" not in page.lower(), page
assert len(urllib.request.urlopen(base + "/docs/swagger-ui-bundle.js").read()) > 100_000
print("  served: one embedding and /docs with its own assets")
PY
kill -TERM $SERVER && wait $SERVER

step "extra: openvino"
venv openvino openvino
run edgeclip embed "$B" --providers OpenVINO --text "a seal" --out "$O/ov.jsonl"

step "extra: heif"
venv heif heif
run python -c "import pillow_heif, edgeclip"
run edgeclip embed "$B" --image-dir "$D/photos" --out "$O/heif.jsonl"

step "extra: ray (a local cluster in a loopback-only network namespace)"
venv ray ray
run unshare -rn sh -c "ip link set lo up && edgeclip embed '$B' --text-file '$D/texts.txt' --out '$O/ray/' --engine ray --workers 1"
run python -c "import pyarrow.dataset as ds; assert ds.dataset('$O/ray').count_rows() == 2"

step "extra: convert (torch pinned first), the converters' commands"
venv convert convert
for command in "" make-checkpoint build validate parity publish; do run python -m converters $command --help; done
run python -m converters make-checkpoint "$O/ckpt" --size tiny
run python -m converters build "$O/ckpt" --out "$O/bundle" --towers text
run edgeclip verify "$O/bundle"
step "every command ran from the installed wheel"
