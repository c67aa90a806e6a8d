#!/bin/sh
# Regenerate markgate-policy.5 (roff) from the policy language reference in
# docs/markgate-policy.5.md, with go-md2man (Debian package go-md2man). The markdown stays the
# source; tests/manpages.rs fails when the two differ, so run this after editing the markdown.
set -eu
cd "$(dirname "$0")/../.."
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
{
	printf '%% MARKGATE-POLICY 5 "" "markgate %s" "File Formats"\n\n' "$version"
	# Drop the markdown title line: the roff header above replaces it.
	sed '1{/^# /d}' docs/markgate-policy.5.md
} | go-md2man > packaging/man/markgate-policy.5
