#!/bin/bash -eu
# Build every cargo-fuzz target in fuzz/ for ClusterFuzzLite / OSS-Fuzz, and package each
# target's committed corpus (fuzz/corpus/TARGET) as its seed corpus. Runs inside the
# base-builder-rust image ($SRC, $OUT and the sanitizer flags come from it).
cd "$SRC/markgate/fuzz"
# Debug assertions on: they are checks the fuzzer should trip, not noise.
cargo fuzz build -O --debug-assertions
# fuzz/ is its own workspace, so its binaries land under fuzz/target.
built="$SRC/markgate/fuzz/target/x86_64-unknown-linux-gnu/release"
for target in $(cargo fuzz list); do
	cp "$built/$target" "$OUT/"
	if [ -d "corpus/$target" ] && [ -n "$(ls -A "corpus/$target")" ]; then
		(cd "corpus/$target" && zip -q -r "$OUT/${target}_seed_corpus.zip" .)
	fi
done
