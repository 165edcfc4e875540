// The NCCL backend's factory (nccl_communicator.cpp): GPU ranks, one GPU each.
#pragma once

#include <memory>

#include "train/communicator.h"

namespace kiln::dist {

// Loads libnccl.so.2 (or $KILN_NCCL_LIBRARY), joins the rendezvous env names, shares NCCL's
// unique id through it and builds the NCCL communicator on GPU env.local_rank.
std::unique_ptr<Communicator> make_nccl_communicator(const LaunchEnv& env);

}  // namespace kiln::dist
