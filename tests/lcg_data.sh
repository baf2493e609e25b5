# Sourced by the CLI tests: lcg_samples FILE N writes N pretokenized samples of 20..59 ids in
# 3..255 from a fixed LCG (seed 7), one {"input_ids": [...]} per line: the same rows every run.
lcg_samples() {
	local out=$1 count=$2 i=0 j n x=7 ids
	: >"$out"
	while [ $i -lt "$count" ]; do
		x=$(((x * 1103515245 + 12345) % 2147483648))
		n=$((20 + x % 40))
		ids=""
		j=0
		while [ $j -lt $n ]; do
			x=$(((x * 1103515245 + 12345) % 2147483648))
			ids="$ids${ids:+, }$((3 + x % 253))"
			j=$((j + 1))
		done
		echo "{\"input_ids\": [$ids]}" >>"$out"
		i=$((i + 1))
	done
}
