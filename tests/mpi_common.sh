# Sourced by the MPI CLI tests (cli_mpi.sh, cli_split.sh).
# mpi_need: "not run" (exit 77) without mpirun. Then mpirun may run as root (CI containers) and
# oversubscribe 2 cores, one thread per rank; mpin N CMD... launches N ranks.
# mpi_config FILE DATA [YAML LINE...]: the shared run: 16 LCG samples packed into rows of 64 on
# DATA/models/llama6, qlora r 4 on every linear layer, 4 steps of 1 x 2 micro-batches, saves at 2.
mpi_need() {
	if ! command -v mpirun >/dev/null 2>&1; then
		echo "not run: mpirun is missing (apt-get install openmpi-bin libopenmpi-dev)"
		exit 77
	fi
}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
mpin() {
	local n=$1
	shift
	mpirun -n "$n" --bind-to none "$@"
}

. "$(dirname "$0")/lcg_data.sh" # $0: the sourcing test, in the same folder
mpi_config() {
	local out=$1 data=$2
	shift 2
	lcg_samples "${out%/*}/d.jsonl" 16
	cat >"$out" <<Y
base_model: $data/models/llama6
adapter: qlora
lora_r: 4
lora_alpha: 8
lora_dropout: 0.1
lora_target_linear: true
datasets:
  - path: ${out%/*}/d.jsonl
    type: pretokenized
sequence_len: 64
sample_packing: true
micro_batch_size: 1
gradient_accumulation_steps: 2
max_steps: 4
save_steps: 2
learning_rate: 0.001
logging_steps: 1
seed: 3
Y
	local line
	for line in "$@"; do
		echo "$line" >>"$out"
	done
}
