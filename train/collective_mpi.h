// The MPI backend of train/collective.h: host buffers, MPI_COMM_WORLD (or a sub-group of it). Built when CMake
// finds MPI (STAPO_HAVE_MPI); without it collective_mpi is an error that says so.
#pragma once
#include <memory>

#include "train/collective.h"  // defines: Collective, DistributedEnv

namespace stapo {

// MPI_Init (funneled: only the main thread calls MPI; OpenMP threads never do) and a check that MPI sees the same
// rank and world size as the launcher's variables. MPI_Finalize when the last MPI backend object goes.
std::unique_ptr<Collective> collective_mpi(const DistributedEnv& env);

}  // namespace stapo
