// The NCCL backend of train/collective.h: the CUDA engine's device buffers, one process per GPU. Built with CUDA.
// The GPU is the process's local rank (cudaSetDevice); NCCL refuses two ranks on one GPU, so a node runs at most
// as many ranks as it has GPUs. The NCCL id travels by MPI_Bcast when an MPI launcher started the job, else
// through the file rendezvous (collective.h) in options.rendezvous_dir, which every node must see. Every host-side
// wait (the communicator's creation, host collectives, synchronize) gives up after options.timeout_s, aborts the
// communicator and fails naming the rank and the operation, so a dead peer never hangs the others for good.
// Host collectives (all_reduce_host, ...) go through a small device buffer: this backend needs no MPI at all.
#pragma once
#include <memory>
#include <string>

#include "train/collective.h"  // defines: Collective, DistributedEnv

namespace stapo {

struct NcclOptions {
  std::string rendezvous_dir;  // without MPI and W > 1: a directory every rank sees (--rendezvous)
  double timeout_s = 600;      // --collective-timeout
};

std::unique_ptr<Collective> collective_nccl(const DistributedEnv& env, const NcclOptions& options);

}  // namespace stapo
