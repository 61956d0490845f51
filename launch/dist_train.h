// unified_train's distributed path (docs/parallel.md): the same job as the
// single-process path, on a TP x PP x DP grid of MPI ranks.
//
//   mpirun -np 4 unified_train --config configs/tiny.textproto
//       --parallel.tp=2 --parallel.pp=2
//
// Every rank runs the same code: out_dir rules and data generation on rank 0
// (the others wait), each rank builds its model shard and loader,
// parallel::DistTrainer steps, world rank 0 prints the progress line and writes
// metrics.jsonl. Checkpoints are the single-process format (params and AdamW
// m/v gathered to whole HF-named tensors, written by rank 0), so any layout
// resumes any other and unified_eval reads them. The evaluation at the end
// runs on rank 0 with the gathered whole model.
#pragma once

#include <string>

#include "core/base/config.h"
#include "core/base/status.h"
#include "launch/train_setup.h"

namespace ut::launch {

// This process's place under an MPI launcher, read from the environment
// before MPI_Init (mpirun: OMPI_COMM_WORLD_*; srun --mpi=pmix: PMIX_RANK and
// SLURM_STEP_NUM_TASKS; PMI: PMI_RANK/PMI_SIZE). Outside a launcher: {0, 1}.
struct MpiEnv {
  int rank = 0;
  int size = 1;
};
MpiEnv DetectMpiEnv();

// Whether unified_train takes the distributed path: world > 1 under a
// launcher, or parallel.tp * pp * dp > 1 in the config.
bool WantsDistributed(const MpiEnv& env, const Config& config);

// Initialises MPI, runs the distributed job, finalises MPI. Returns the
// process exit code (0, 2 for an error, 130 after a stop request); prints its
// own error lines (rank 0 for errors every rank agrees on, else the failing
// rank, prefixed "rank N: ").
int RunDistributed(int* argc, char*** argv, const TrainFlags& flags, Config config);

}  // namespace ut::launch
